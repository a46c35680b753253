"""``python -m mailqueue_dev.chaos``: the chaos run from the command line."""

import sys

from mailqueue_dev.chaos import main

sys.exit(main())
