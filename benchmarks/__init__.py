"""The benchmark programs and, in `benchmarks.measuring`, their measuring code: run from a checkout, not installed."""
