"""``python -m densessl`` runs the command line (torchrun needs a module or a script)."""

import sys

from densessl.cli import main

sys.exit(main())
