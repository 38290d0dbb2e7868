"""``python -m runtime.serve``: see ``runtime.serve.cli``."""

import sys

from runtime.serve.cli import main

sys.exit(main())
