"""mysite's settings without cogman.contrib.django in INSTALLED_APPS: the app says what is missing."""

from mysite.settings import *  # noqa: F403

INSTALLED_APPS = ["django.contrib.contenttypes", "shop"]
