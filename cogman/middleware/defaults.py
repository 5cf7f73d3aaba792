"""The middleware every App installs by itself, decided from its configuration when it is made.

Heartbeats are on by default (``cogman ping``); metrics when ``metrics_port`` is set; tracing when
``tracing`` is on and ``opentelemetry-api`` imports (docs/tracing.md). The heartbeat and the metrics only
act once a worker boots, so a sending-only process pays nothing for them.
"""

from __future__ import annotations

from cogman.middleware.base import AppView
from cogman.middleware.heartbeat import Heartbeat


def install_defaults(app: AppView) -> None:
    if not any(isinstance(m, Heartbeat) for m in app.middleware.middleware):
        app.middleware.middleware.append(Heartbeat())
    if app.config.tracing:
        from cogman.middleware.tracing import install_tracing

        install_tracing(app.middleware, app)
    if app.config.metrics_port is not None:
        from cogman.middleware.prometheus import install_prometheus

        install_prometheus(app, app.config.metrics_port)
