"""Benchmarks: cogman against raw kombu, Celery and Dramatiq on one RabbitMQ and one Redis.

``python bench/run.py`` (or ``nox -s bench``) is the entry point; see docs/performance.md. Timing goals
live here, never in the test suite.
"""
