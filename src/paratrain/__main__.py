"""`python -m paratrain` is the `paratrain` command (torchrun runs it this way: `torchrun ... -m paratrain fit ...`)."""

import sys

from paratrain.cli import main

sys.exit(main())
