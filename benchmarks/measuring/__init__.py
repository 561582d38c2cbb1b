"""The measuring code of the programs in benchmarks/, one module per program.

Kept importable (and tested in tests/test_benchmarking_*.py) so that each program in benchmarks/ is a thin command
line beside its results; not installed with `modeling_gpa`, it imports from a checkout (each program puts the
checkout's root on `sys.path`). It needs only torch, transformers and numpy (plus what a module names), because the GPU
machines the benchmarks run on have neither `datasets` nor `evaluate` nor an install of this package.
"""
