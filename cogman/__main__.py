"""``python -m cogman`` is the ``cogman`` command."""

import sys

from cogman.cli.main import main

sys.exit(main())
