#!/usr/bin/env python
"""Which heads of the benchmark's teachers find the garment: few-shot selection against a held-out check.

The measuring code, its usage and its options: `benchmarks.measuring.teacher_heads`.
What the committed results mean: benchmarks/README.md.
Runs from a plain checkout: the GPU machines have no install of this repository.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.teacher_heads import main  # noqa: E402

if __name__ == "__main__":
    main()
