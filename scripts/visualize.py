#!/usr/bin/env python
"""The description's command:
`python scripts/visualize.py --model_path results/pathmnist_latest/best_model.pth --dataset pathmnist`.

Same options as `focusnet visualize` (see `python scripts/visualize.py --help`).
"""

import sys

from focusnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["visualize", *sys.argv[1:]]))
