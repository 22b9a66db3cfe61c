"""``python -m distilsent`` is the ``distilsent`` command."""

import sys

from distilsent.cli import main

sys.exit(main())
