#!/usr/bin/env python
"""SimMIM with random vs GPA masks, ViT and Swin students, plain and cluttered Fashion-MNIST.

The measuring code, its usage and its options: `benchmarks.measuring.simmim_transfer`.
What the committed results mean: benchmarks/README.md.
Runs from a plain checkout: the GPU machines have no install of this repository.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.simmim_transfer import main  # noqa: E402

if __name__ == "__main__":
    main()
