"""``python -m running_process``: the command line of :mod:`running_process.cli`."""

import sys

from running_process.cli import main

sys.exit(main())
