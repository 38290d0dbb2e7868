"""``python -m runtime`` is ``python -m runtime.infer``."""

import sys

from runtime.infer import main

sys.exit(main())
