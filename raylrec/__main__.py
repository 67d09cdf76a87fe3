"""`python -m raylrec ...`: the same command line as `raylrec ...` (raylrec/cli.py)."""

import sys

from raylrec.cli import main

if __name__ == "__main__":
    sys.exit(main())
