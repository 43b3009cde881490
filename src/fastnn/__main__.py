"""``python -m fastnn``: the command line (see fastnn.tools.cli)."""
import sys

from .tools.cli import main

sys.exit(main())
