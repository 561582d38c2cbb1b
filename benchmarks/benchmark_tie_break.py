#!/usr/bin/env python
"""Does breaking few-shot recall ties by average precision choose heads that rank objects better on held-out images?

The measuring code, its usage and its options: `benchmarks.measuring.tie_break`.
What the committed results mean: benchmarks/README.md.
Runs from a plain checkout: the GPU machines have no install of this repository.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.tie_break import main  # noqa: E402

if __name__ == "__main__":
    main()
