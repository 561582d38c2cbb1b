#!/usr/bin/env python
"""What each evaluation protocol gives on one checkpoint: fine-tuning recipes and the linear probe, side by side.

The measuring code, its usage and its options: `benchmarks.measuring.finetune_recipes`.
What the committed results mean: benchmarks/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.finetune_recipes import main  # noqa: E402

if __name__ == "__main__":
    main()
