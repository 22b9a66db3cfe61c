"""``python -m distilsent`` is the ``distilsent`` command."""

import sys

from .cli import main

sys.exit(main())
