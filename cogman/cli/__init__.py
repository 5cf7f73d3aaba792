"""The ``cogman`` command: ``main`` parses the subcommands (``worker``, ``beat``, ``api``, the operator's
``inspect list retry queues purge ping workers cancel``, ``demo``), the ``--processes`` supervisor (processes.py),
and calls into the packages that do the work.

The top of the tree: it may import any package; nothing imports it but ``python -m cogman``.
"""

from cogman.cli.main import main

__all__ = ["main"]
