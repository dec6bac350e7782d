"""`python -m jaxlm.cli` is the `jaxlm` command."""

import sys

from jaxlm.cli import main

if __name__ == "__main__":
    sys.exit(main())
