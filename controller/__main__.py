"""`python -m controller`: the same as `surgescale controller`."""

import sys

from controller.cli import main

raise SystemExit(main(sys.argv[1:]))
