"""`python -m paratrain` is the `paratrain` command (torchrun runs it this way: `torchrun ... -m paratrain fit ...`)."""

from paratrain.cli import run

run()
