"""cogman in a Django project (docs/django.md).

* ``app``: the project's cogman App, configured from the ``COGMAN_*`` Django settings (config.py) and made
  on first use (project.py), so ``DJANGO_SETTINGS_MODULE=mysite.settings cogman -A
  cogman.contrib.django:app worker`` runs the project's tasks; with ``"cogman.contrib.django"`` in
  ``INSTALLED_APPS`` every installed app's ``tasks.py`` is imported when Django starts (apps.py). Its
  ``@app.task`` functions have ``delay_on_commit`` (DjangoTask).
* ``CogmanBackend``: a backend for Django's ``django.tasks`` (backend.py; results.py reads its results).

Imports Django and any part of cogman; nothing in cogman imports it. Importing this package imports no
Django module and reads no setting: each name is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cogman.contrib.django.backend import CogmanBackend, CogmanTask
    from cogman.contrib.django.project import DjangoApp, DjangoTask

    app: DjangoApp

__all__ = ["CogmanBackend", "CogmanTask", "DjangoApp", "DjangoTask", "app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from cogman.contrib.django.project import project_app

        return project_app()
    if name in ("CogmanBackend", "CogmanTask"):
        from cogman.contrib.django import backend

        return getattr(backend, name)
    if name in ("DjangoApp", "DjangoTask"):
        from cogman.contrib.django import project

        return getattr(project, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
