#!/usr/bin/env python
"""How fast does the GPA explorer start and answer each change, for the quick-start checkpoint and ViT-B/16?

The measuring code, its usage and its options: `benchmarks.measuring.explorer`.
What the committed results mean: benchmarks/README.md.
Runs from a plain checkout: the GPU machines have no install of this repository.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.explorer import main  # noqa: E402

if __name__ == "__main__":
    main()
