"""``python -m walkreg`` (and ``accelerate launch -m walkreg ...``) run the command-line interface."""

import sys

from walkreg.cli import main


sys.exit(main())
