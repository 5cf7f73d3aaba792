"""Settings of the test project. The cogman ones are the COGMAN_* settings at the end; the test sets the
environment variables they read (SHOP_*), as a deployment would."""

import os
from pathlib import Path

import django

SECRET_KEY = "tests-only, never deployed"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = ["django.contrib.contenttypes", "cogman.contrib.django", "shop"]
if django.VERSION < (6,):
    INSTALLED_APPS.append("django_tasks")  # the backport of django.tasks
ROOT_URLCONF = "mysite.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DB", str(Path(__file__).resolve().parent / "shop.sqlite3")),
        "ATOMIC_REQUESTS": True,  # a view's writes commit when it returns, or roll back when it raises
    }
}

TASKS = {"default": {"BACKEND": "cogman.contrib.django.CogmanBackend"}}

COGMAN_BROKER_URL = os.environ.get("SHOP_BROKER_URL", "memory://")
COGMAN_BACKEND_URL = os.environ.get("SHOP_BACKEND_URL", "memory://")
COGMAN_CONCURRENCY = 2
COGMAN_HEARTBEAT_INTERVAL = "1"  # a string, parsed as the environment variable would be
