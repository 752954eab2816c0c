"""`python -m terminal` runs the same command line as `possim`."""

import sys

from terminal.cli import main

sys.exit(main())
