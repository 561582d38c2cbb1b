#!/usr/bin/env python
"""Conditional DETR over GPABackbone on cluttered Fashion-MNIST boxes: loss and COCO-style box mAP.

The measuring code, its usage and its options: `benchmarks.measuring.detection`.
What its numbers mean: docs/dense_transfer.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.detection import main  # noqa: E402

if __name__ == "__main__":
    main()
