"""`python -m focusnet ...` (and `torchrun ... -m focusnet train ...`)."""

import sys

from .cli import main

sys.exit(main())
