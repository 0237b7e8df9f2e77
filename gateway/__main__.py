"""`python -m gateway`: the same as `surgescale gateway`."""

import sys

from gateway.cli import main

sys.exit(main(sys.argv[1:]))
