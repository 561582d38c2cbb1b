#!/usr/bin/env python
"""Every mask strategy (random, block, CLS attention, GPA, HPM) on cluttered Fashion-MNIST under one protocol.

The measuring code, its usage and its options: `benchmarks.measuring.mask_strategies`.
Runs from a plain checkout: the GPU machines have no install of this repository.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.mask_strategies import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
