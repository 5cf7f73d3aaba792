"""OpenTelemetry tracing, built in: a PRODUCER span per send, a CONSUMER span per attempt (docs/tracing.md).

``App`` installs :class:`Tracing` when ``Config.tracing`` is on (the default) and ``opentelemetry-api`` can be
imported (``pip install cogman[otel]``): the import is tried once, there, and when it fails or tracing is
off no ``Tracing`` is in the stack, so no send or attempt pays for it. Spans go to the tracer provider the
program configured (``opentelemetry.trace.set_tracer_provider``, before or after the app is made); with
none, OpenTelemetry's no-op spans are made and nothing is sent.

* ``before_sending`` / ``after_sending``: the span ``send <task name>`` (PRODUCER) around one send (a
  ``send``/``send_many`` call, a retry attempt, a workflow step, a periodic tick), current while it runs, so
  ``before_send`` writes its context into each message's ``traceparent`` / ``tracestate`` headers. A
  workflow's send (``chain``, ``group``, ``chord``) is the span ``send <kind>`` (INTERNAL) around its sends.
* ``before_execute`` ... ``after_outcome``: the span ``process <task name>`` (CONSUMER), child of the
  context the message carries (a new trace when it carries none), current while the handler runs and while
  the worker sends what follows (a retry, a chain's next step, a chord's callback): all in the same trace.

The spans of one thread nest (a workflow's send holds its batches'; eager mode runs a child inside its
parent's attempt), so each thread keeps a stack; a hook pops only its own entry.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from cogman.brokers.base import prefixed
from cogman.middleware.base import AppView, Middleware, MiddlewareStack, Sending

if TYPE_CHECKING:
    from cogman.message import Message

#: The instrumentation scope of cogman's spans.
SCOPE = "cogman"
#: ``cogman.status`` of a process span: the attempt's record status after each outcome (execution.Outcome).
STATUS_OF_OUTCOME = {
    "succeeded": "success",
    "failed": "failed",
    "retried": "failed",
    "dead_lettered": "failed",
    "expired": "failed",
    "requeued": "in_progress",
}


def install_tracing(stack: MiddlewareStack, app: AppView) -> Tracing | None:
    """Add :class:`Tracing` to ``stack`` (once) if ``opentelemetry-api`` can be imported; None if not."""
    for middleware in stack.middleware:
        if isinstance(middleware, Tracing):
            middleware.app = middleware.app or app
            return middleware
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return None
    tracing = Tracing(app=app)
    stack.middleware.append(tracing)
    return tracing


class Tracing(Middleware):
    """Pass one yourself (``App(middleware=[Tracing(tracer_provider=provider)])``) to use a provider other
    than the global one; ``App`` then adds no second one."""

    def __init__(self, tracer_provider: Any = None, *, app: AppView | None = None) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from cogman import __version__

        self._app: weakref.ref[AppView] | None = None
        self.app = app
        self._trace = trace
        self._context = context
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        self._propagator = TraceContextTextMapPropagator()
        self._local = threading.local()

    @property
    def app(self) -> AppView | None:
        """The app whose config says whether to trace (held weakly: an app left by its program is freed)."""
        return self._app() if self._app is not None else None

    @app.setter
    def app(self, app: AppView | None) -> None:
        self._app = weakref.ref(app) if app is not None else None

    # Sending

    def before_sending(self, sending: Sending) -> None:
        if not self._on():
            return
        trace = self._trace
        attributes: dict[str, Any] = {"cogman.task.name": sending.name}
        if sending.workflow is not None:
            name, kind = f"send {sending.workflow}", trace.SpanKind.INTERNAL
            attributes["cogman.workflow"] = sending.workflow
        else:
            name, kind = f"send {sending.name}", trace.SpanKind.PRODUCER
            attributes.update(self._messaging("send"))
            messages = sending.messages
            if len(messages) == 1:
                attributes["messaging.message.id"] = messages[0].task_id
                attributes["cogman.attempt"] = messages[0].attempt
            else:
                attributes["messaging.batch.message_count"] = len(messages)
            if messages:
                attributes["messaging.destination.name"] = self._destination(messages[0])
        self._push(sending, self._tracer.start_span(name, kind=kind, attributes=attributes))

    def before_send(self, message: Message) -> None:
        """The current span's context into the message's headers (none when no span is current)."""
        if not self._on():
            return
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        if carrier:
            message.carry(carrier)

    def after_sending(self, sending: Sending) -> None:
        span = self._pop(sending)
        if span is None:
            return
        if sending.exception is not None:
            self._failed(span, sending.exception)
        span.end()

    # Executing

    def before_execute(self, message: Message) -> None:
        if not self._on():
            return
        parent = self._propagator.extract(message.trace_context or {})
        attributes = self._messaging("process")
        attributes.update({
            "messaging.destination.name": self._destination(message),
            "messaging.message.id": message.task_id,
            "cogman.task.name": message.name,
            "cogman.attempt": message.attempt,
            "cogman.original_task_id": message.original_task_id,
        })  # fmt: skip
        span = self._tracer.start_span(
            f"process {message.name}", context=parent, kind=self._trace.SpanKind.CONSUMER, attributes=attributes
        )
        self._push(message.task_id, span)

    def after_execute(self, message: Message, *, result: Any = None, exception: BaseException | None = None) -> None:
        span = self._top(message.task_id)
        if span is not None and exception is not None:
            self._failed(span, exception)

    def after_outcome(self, message: Message | None, outcome: str) -> None:
        if message is None:
            return
        span = self._pop(message.task_id)
        if span is None:
            return
        span.set_attribute("cogman.outcome", outcome)
        span.set_attribute("cogman.status", STATUS_OF_OUTCOME.get(outcome, outcome))
        span.end()

    # Helpers

    def _on(self) -> bool:
        app = self.app
        return app is None or app.config.tracing

    def _messaging(self, operation: str) -> dict[str, Any]:
        app = self.app
        url = app.config.broker_url if app is not None else ""
        return {
            "messaging.system": "memory" if url.startswith("memory://") else "rabbitmq",
            "messaging.operation.type": operation,
            "messaging.operation.name": operation,
        }

    def _destination(self, message: Message) -> str:
        """The queue family (``high_priority_queue``): the broker picks one of its queues round robin."""
        app = self.app
        prefix = app.config.queue_prefix if app is not None else ""
        return prefixed(prefix, f"{message.priority.value}_priority_queue")

    def _failed(self, span: Any, exception: BaseException) -> None:
        span.record_exception(exception)
        span.set_attribute("error.type", type(exception).__qualname__)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))

    def _stack(self) -> list[tuple[object, Any, Any]]:
        stack: list[tuple[object, Any, Any]] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _push(self, key: object, span: Any) -> None:
        """Make ``span`` current on this thread until :meth:`_pop` with the same ``key``."""
        token = self._context.attach(self._trace.set_span_in_context(span))
        self._stack().append((key, span, token))

    def _top(self, key: object) -> Any:
        stack = self._stack()
        return stack[-1][1] if stack and _same(stack[-1][0], key) else None

    def _pop(self, key: object) -> Any:
        stack = self._stack()
        if not stack or not _same(stack[-1][0], key):
            return None
        _, span, token = stack.pop()
        self._context.detach(token)
        return span


def _same(held: object, key: object) -> bool:
    """A send's entry is its ``Sending`` (by identity), an attempt's its task id (by value)."""
    return held is key or (isinstance(key, str) and held == key)
