"""A small Django project (mysite, with the app shop) and the tests of cogman.contrib.django against it:
``nox -s django`` (Django 6 on Python 3.12, Django 5.2 and the backport on 3.11), never the main suite
(conftest.py)."""
