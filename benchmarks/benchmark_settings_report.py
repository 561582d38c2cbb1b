#!/usr/bin/env python
"""Arms of the Fashion-MNIST benchmark across every setting cached in its work dirs, against both references.

The measuring code, its usage and its options: `benchmarks.measuring.settings_report`.
What the committed results mean: benchmarks/README.md.
Runs from a plain checkout: the GPU machines have no install of this repository.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.settings_report import main  # noqa: E402

if __name__ == "__main__":
    main()
