"""``python -m dynod.cli``: the same as the dynoctl console script."""

import sys

from . import main

sys.exit(main())
