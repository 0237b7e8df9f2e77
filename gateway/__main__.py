"""`python -m gateway`: the same as `surgescale gateway`."""

import sys

from gateway.cli import main

if __name__ == "__main__":  # not when a spawned worker re-imports this module
    sys.exit(main(sys.argv[1:]))
