"""``python -m u2net`` is the ``u2net`` command."""

import sys

from u2net.cli import main

sys.exit(main())
