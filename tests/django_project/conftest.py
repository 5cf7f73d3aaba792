"""The Django tests need Django (6, or 5.2 with the django-tasks backport): ``nox -s django`` installs it,
sets ``COGMAN_DJANGO_TESTS=1`` and runs them; the main suite (no Django) leaves them out. Nothing here
imports Django."""

from __future__ import annotations

import os

if os.environ.get("COGMAN_DJANGO_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]
