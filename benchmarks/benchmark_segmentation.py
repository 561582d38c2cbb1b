#!/usr/bin/env python
"""UperNet semantic segmentation over MAE, GPA and random-init encoders on cluttered Fashion-MNIST.

The measuring code, its usage and its options: `benchmarks.measuring.segmentation`.
What the committed results mean: benchmarks/segmentation_cpu.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.segmentation import main  # noqa: E402

if __name__ == "__main__":
    main()
