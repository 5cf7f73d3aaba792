"""Entry point: ``python bench/run.py [--quick]`` from the project root (``nox -s bench`` runs it).

Runs raw kombu, cogman (each send mode), Celery and Dramatiq against RabbitMQ (vhost ``cogman_bench``)
and Redis (database 14) on 127.0.0.1; writes bench/results/latest.{md,json,png}. See bench.harness.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    # Run as a script, Python puts bench/ first on the path; the harness imports itself as a package.
    sys.path[0] = str(ROOT)
    from bench.harness import main

    sys.exit(main())
