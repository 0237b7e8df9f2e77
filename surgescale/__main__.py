"""`python -m surgescale` runs the command line."""

import sys

from surgescale.cli import main

sys.exit(main())
