"""The cogman App of a Django project: configured from its settings (config.py), its tasks found in every
installed app's ``tasks.py`` (apps.py), ``delay_on_commit``, and database connections closed around each
task as Django closes them around each request.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from cogman.app import App
from cogman.contrib.django.config import options_from_settings
from cogman.errors import ConfigError
from cogman.middleware.base import Middleware
from cogman.task import Task

if TYPE_CHECKING:
    from cogman.backoff import Backoff
    from cogman.message import Message
    from cogman.priority import Priority

P = ParamSpec("P")
R = TypeVar("R")

#: What ``INSTALLED_APPS`` must list for the tasks to be found (apps.py).
APP_NAME = "cogman.contrib.django"


class DjangoTask(Task[P, R]):
    """A cogman task with Celery 5.4's ``delay_on_commit`` and ``apply_async_on_commit``."""

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """``delay(*args, **kwargs)`` once the current transaction of the default database commits (at once
        outside a transaction); nothing is sent if it rolls back. Returns None: there is no id until then."""
        from django.db import transaction

        transaction.on_commit(partial(self.delay, *args, **kwargs))

    def apply_async_on_commit(
        self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> None:
        """``apply_async(args, kwargs, **options)`` once the current transaction commits, as ``delay_on_commit``."""
        from django.db import transaction

        transaction.on_commit(partial(self.apply_async, tuple(args), kwargs, **options))


class DjangoApp(App):
    """An App whose ``@app.task`` gives DjangoTask, and whose workers close stale database connections."""

    task_class = DjangoTask

    @overload
    def task(self, fn: Callable[P, R], /) -> DjangoTask[P, R]: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        priority: Priority | str = ...,
        retry: int = 0,
        bind: bool = False,
        retry_backoff: Backoff | None = None,
        retry_for: tuple[type[BaseException], ...] | None = None,
        time_limit: float | None = None,
        wire: str = "cogman",
        **options: Any,
    ) -> Callable[[Callable[P, R]], DjangoTask[P, R]]: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        return super().task(fn) if fn is not None else super().task(**options)


class CloseOldConnections(Middleware):
    """Before and after each task, close the handler thread's database connections that are broken or
    past ``CONN_MAX_AGE`` (what Django does around each request); a worker thread never reuses a dead one."""

    def before_execute(self, message: Message) -> None:
        from django.db import close_old_connections

        close_old_connections()

    def after_execute(self, message: Message, *, result: Any = None, exception: BaseException | None = None) -> None:
        from django.db import close_old_connections

        close_old_connections()


_lock = threading.RLock()
_app: DjangoApp | None = None


def project_app() -> DjangoApp:
    """The project's app (``cogman.contrib.django.app``), made on first use from the Django settings. In a
    process that has not set Django up (``cogman -A cogman.contrib.django:app worker``), sets it up, which
    imports every installed app's ``tasks.py`` (apps.py)."""
    global _app
    with _lock:
        if _app is not None:
            return _app
        from django.apps import apps
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        try:
            options = options_from_settings(settings)
        except ImproperlyConfigured as exc:
            raise ConfigError(
                f"cogman.contrib.django.app needs the Django settings: set DJANGO_SETTINGS_MODULE ({exc})"
            ) from None
        name = (os.environ.get("DJANGO_SETTINGS_MODULE") or "django").split(".")[0]
        _app = DjangoApp(name, middleware=[CloseOldConnections()], **options)
        if not apps.ready and not apps.loading:
            import django

            django.setup()  # its AppConfig.ready() calls back here and finds _app
        if not apps.is_installed(APP_NAME):
            _app = None
            raise ConfigError(
                f"add {APP_NAME!r} to INSTALLED_APPS: it finds the tasks in every installed app's tasks.py "
                "when Django starts"
            )
        return _app


def reset() -> None:
    """Forget the project's app (closing it), so the next use builds it from the settings again; for tests
    that change the COGMAN_* settings."""
    global _app
    with _lock:
        app, _app = _app, None
    if app is not None:
        app.close()
