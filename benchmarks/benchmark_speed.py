#!/usr/bin/env python
"""GPA's cost against MAE: training steps, teacher scoring, the score alone, mask generation, memory, FLOPs.

The measuring code, its usage and its options: `benchmarks.measuring.speed`.
What the committed results mean: benchmarks/README.md.
Runs from a plain checkout: the GPU machines have no install of this repository.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.speed import main  # noqa: E402

if __name__ == "__main__":
    main()
