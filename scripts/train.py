#!/usr/bin/env python
"""The description's command: `python scripts/train.py --dataset pathmnist --epochs 100`.

Same options as `focusnet train` (see `python scripts/train.py --help`).
"""

import sys

from focusnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
