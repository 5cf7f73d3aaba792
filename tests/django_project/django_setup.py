"""A pytest plugin for the inner runs of test_django.py (``-p django_setup``): Django set up before the
tests are collected, as pytest-django would; the project's database is the outer run's, migrated."""

import django

django.setup()
