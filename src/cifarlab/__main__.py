"""`python -m cifarlab`: the `cifarlab` command, as torchrun starts it (`torchrun ... -m cifarlab train ...`)."""

from cifarlab.cli import run

if __name__ == "__main__":
    run()
