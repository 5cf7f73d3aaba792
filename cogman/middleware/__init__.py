"""Cross-cutting features as ``before_*`` / ``after_*`` hooks around sends and attempts (base.py), and the
middleware cogman ships: worker heartbeats (heartbeat.py), Prometheus metrics (prometheus.py) and
OpenTelemetry tracing (tracing.py, which imports ``opentelemetry`` only when it is installed).

May import the shared vocabulary at the top of ``cogman`` and ``brokers`` / ``backends`` protocols; a hook
sees the worker through the small ``WorkerView`` protocol, never the worker package.
"""

from cogman.middleware.base import Middleware, MiddlewareStack

__all__ = ["Middleware", "MiddlewareStack"]
