"""``python -m portaconv`` is the ``portaconv`` command."""

import sys

from .cli import main

sys.exit(main())
