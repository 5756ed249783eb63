"""``python -m running_process.cli``: the same command line as ``python -m running_process``."""

import sys

from running_process.cli import main

sys.exit(main())
