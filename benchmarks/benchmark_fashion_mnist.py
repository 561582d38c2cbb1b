#!/usr/bin/env python
"""MAE vs GPA masking on plain and cluttered Fashion-MNIST: k-NN and linear-probe accuracy over seeds.

The measuring code, its usage and its options: `benchmarks.measuring.fashion_mnist`.
What the committed results mean: benchmarks/README.md.
Runs from a plain checkout: the GPU machines have no install of this repository.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.fashion_mnist import main  # noqa: E402

if __name__ == "__main__":
    main()
