"""``python -m cogman`` is the ``cogman`` command."""

import sys

from cogman.cli import main

sys.exit(main())
