"""``python -m automation --help``."""

import sys

from automation.cli import main

sys.exit(main())
