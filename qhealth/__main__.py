"""``python -m qhealth`` is the ``qhealth`` command."""

import sys

from .cli import main

sys.exit(main())
