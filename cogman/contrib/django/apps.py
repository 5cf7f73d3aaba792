"""The Django app ``cogman.contrib.django`` (in ``INSTALLED_APPS``): when Django starts, it imports every
installed app's ``tasks.py``, so the worker, the beat and the web processes know the same tasks; as the admin
finds ``admin.py``, after every model is loaded, never while some ``tasks.py`` is half imported."""

from __future__ import annotations

from django.apps import AppConfig


class CogmanConfig(AppConfig):
    name = "cogman.contrib.django"
    label = "cogman"
    verbose_name = "cogman"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from cogman.contrib.django.project import project_app

        project_app()
        autodiscover_modules("tasks")
