"""`python -m cifarlab`: the `cifarlab` command, as torchrun starts it (`torchrun ... -m cifarlab train ...`)."""

import sys

from cifarlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
