"""cogman.contrib.django against a real project (mysite, app shop, SQLite in a file), RabbitMQ and Redis,
with a real ``cogman -A cogman.contrib.django:app worker`` process: the view's task runs after its
transaction commits and sees the row, a rolled-back one sends nothing, and ``django.tasks`` tasks go
enqueue -> worker -> ``get_result``. Run by ``nox -s django``: Django 6 on Python 3.12, and Django 5.2 with
the django-tasks backport on Python 3.11."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from cogman.backends.base import TaskQuery
from cogman.priority import Priority
from tests.conftest import RABBITMQ_URL, REDIS_URL, require_service
from tests.integration.rabbit_helpers import reset_queues, vhost_url

pytest_plugins = ["pytester"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Django set up on the test project, its database migrated; the environment its settings read."""
    require_service(5672, "RabbitMQ")
    require_service(6379, "Redis")
    broker = vhost_url(RABBITMQ_URL)
    reset_queues(broker)
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        "DJANGO_SETTINGS_MODULE": "mysite.settings",
        "SHOP_DB": str(tmp_path_factory.mktemp("django") / "shop.sqlite3"),
        "SHOP_BROKER_URL": broker,
        "SHOP_BACKEND_URL": REDIS_URL,
    }
    os.environ.update(env)
    sys.path.insert(0, str(HERE))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    yield env
    from cogman.contrib.django.project import reset

    reset()


@pytest.fixture(scope="session")
def worker(project: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """``cogman -A cogman.contrib.django:app worker`` in its own process; yields its banner's lines."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log, "wb") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "cogman", "-A", "cogman.contrib.django:app", "worker"],
            cwd=ROOT,
            # COGMAN_CONCURRENCY = 2 in the settings wins over the environment
            env={**os.environ, **project, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}", "COGMAN_CONCURRENCY": "5"},
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    banner: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            banner.append(line)
            if "ready:" in line:
                break
        else:
            pytest.fail(f"the worker stopped before it was ready:\n{''.join(banner)}\n{log.read_text()}")
        yield banner
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    assert process.returncode == 0, log.read_text()


def sent_ids(name: str) -> list[str]:
    from cogman.contrib.django import app

    return [record.task_id for record in app.backend.query(TaskQuery(name=name)).records]


def test_the_worker_loads_the_project_and_finds_the_tasks_of_every_app(worker: list[str]) -> None:
    banner = "".join(worker)
    for name in ("shop.tasks.write_receipt", "shop.tasks.total", "shop.tasks.whoami", "shop.tasks.out_of_stock"):
        assert name in banner
    assert "mysite (cogman.contrib.django:app)" in banner  # named after the settings' package
    assert "ready: 2 threads" in banner  # COGMAN_CONCURRENCY from the settings, not the environment's 5


def test_a_view_sends_on_commit_and_the_worker_sees_the_row(worker: list[str]) -> None:
    from django.test import Client
    from shop.models import Order

    from cogman.contrib.django import app

    before = set(sent_ids("shop.tasks.write_receipt"))
    response = Client().post("/orders/", {"item": "a book"})
    assert response.status_code == 200
    order_id = json.loads(response.content)["order"]
    (task_id,) = set(sent_ids("shop.tasks.write_receipt")) - before
    assert app.result(task_id).get(timeout=60) == "receipt for a book"
    assert Order.objects.get(pk=order_id).receipt == "receipt for a book"  # written by the worker process


def test_nothing_is_sent_before_the_commit(worker: list[str]) -> None:
    from django.db import transaction
    from shop.models import Order
    from shop.tasks import write_receipt

    from cogman.contrib.django import app

    before = set(sent_ids("shop.tasks.write_receipt"))
    with transaction.atomic():
        order = Order.objects.create(item="a lamp")
        assert write_receipt.delay_on_commit(order.pk) is None
        assert set(sent_ids("shop.tasks.write_receipt")) == before  # not recorded, not published
    (task_id,) = set(sent_ids("shop.tasks.write_receipt")) - before
    assert app.result(task_id).get(timeout=60) == "receipt for a lamp"


def test_a_rolled_back_request_sends_nothing(worker: list[str]) -> None:
    from django.test import Client
    from shop.models import Order

    before = set(sent_ids("shop.tasks.write_receipt"))
    orders = Order.objects.count()
    with pytest.raises(RuntimeError, match="payment refused"):
        Client().post("/orders/", {"item": "a chair", "fail": "1"})
    assert Order.objects.count() == orders  # the row was rolled back...
    assert set(sent_ids("shop.tasks.write_receipt")) == before  # ...and its task never sent


def test_django_tasks_enqueue_run_on_the_worker_and_their_result_is_read_by_id(worker: list[str]) -> None:
    from shop.tasks import total

    from cogman.contrib.django import app
    from cogman.contrib.django.tasks_api import TaskResultStatus, default_task_backend, task_enqueued

    seen: list[str] = []

    def on_enqueued(sender: object, task_result: Any, **kwargs: object) -> None:
        seen.append(task_result.id)

    task_enqueued.connect(on_enqueued)
    try:
        enqueued = total.enqueue([1, 2.5])
    finally:
        task_enqueued.disconnect(on_enqueued)
    assert seen == [enqueued.id]
    assert enqueued.status == TaskResultStatus.READY and enqueued.enqueued_at is not None
    assert app.result(enqueued.id).get(timeout=60) == 3.5
    result = total.get_result(enqueued.id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 3.5
    assert result.args == [[1, 2.5]] and result.kwargs == {}
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.attempts == 1 and result.errors == []
    assert result.backend == "default" and result.task.func is total.func
    assert default_task_backend.get_result(enqueued.id).return_value == 3.5
    enqueued.refresh()
    assert enqueued.status == TaskResultStatus.SUCCESSFUL and enqueued.return_value == 3.5


def test_a_failed_django_task_reports_its_exception(worker: list[str]) -> None:
    from shop.tasks import out_of_stock

    from cogman import TaskFailed
    from cogman.contrib.django import app
    from cogman.contrib.django.tasks_api import TaskResultStatus

    enqueued = out_of_stock.enqueue("chairs")
    with pytest.raises(TaskFailed):
        app.result(enqueued.id).get(timeout=60)
    result = out_of_stock.get_result(enqueued.id)
    assert result.status == TaskResultStatus.FAILED and result.is_finished
    (error,) = result.errors
    assert error.exception_class_path == "builtins.LookupError" and error.exception_class is LookupError
    assert "no chairs left" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value


def test_priorities_map_onto_the_two_families(worker: list[str]) -> None:
    from shop.tasks import count_orders, out_of_stock, total

    from cogman.contrib.django import app

    def family(result_id: str) -> Priority:
        return app.result(result_id).record().priority

    assert family(total.enqueue([1]).id) is Priority.HIGH  # 10
    assert family(count_orders.enqueue().id) is Priority.HIGH  # 0, Django's default
    assert family(out_of_stock.enqueue("x").id) is Priority.LOW  # -50
    assert family(count_orders.using(priority=-1).enqueue().id) is Priority.LOW


def test_a_task_taking_the_context_gets_its_result_id(worker: list[str]) -> None:
    from shop.tasks import whoami

    from cogman.contrib.django import app

    enqueued = whoami.enqueue(label="me")
    assert app.result(enqueued.id).get(timeout=60) == {"id": enqueued.id, "attempt": 1, "label": "me"}


def test_an_async_django_task_runs(worker: list[str]) -> None:
    from shop.tasks import add_later

    from cogman.contrib.django import app

    assert app.result(add_later.enqueue(2, 3).id).get(timeout=60) == 5


def test_worker_threads_close_their_database_connections_between_tasks(worker: list[str]) -> None:
    """Two handler threads, four tasks one after the other: some thread runs two, and finds its connection
    closed (CloseOldConnections) instead of left open by its previous task."""
    from shop.tasks import connection_was_closed

    assert [connection_was_closed.delay().get(timeout=60) for _ in range(4)] == [True] * 4


def test_run_after_is_the_tasks_eta(worker: list[str]) -> None:
    from django.utils import timezone
    from shop.tasks import total

    from cogman.contrib.django import app

    when = timezone.now() + timedelta(seconds=1)
    enqueued = total.using(run_after=when).enqueue([2])
    assert app.result(enqueued.id).record().eta == when
    assert app.result(enqueued.id).get(timeout=60) == 2
    assert total.get_result(enqueued.id).started_at >= when


def test_django_tasks_enqueue_on_commit(worker: list[str]) -> None:
    from django.db import transaction
    from shop.tasks import count_orders

    from cogman.contrib.django import app

    before = set(sent_ids("shop.tasks.count_orders"))
    with transaction.atomic():
        count_orders.enqueue_on_commit()
        assert set(sent_ids("shop.tasks.count_orders")) == before
    (task_id,) = set(sent_ids("shop.tasks.count_orders")) - before
    assert app.result(task_id).get(timeout=60) >= 0


def test_results_of_unknown_ids_and_of_other_tasks(worker: list[str]) -> None:
    from shop.tasks import count_orders, total, write_receipt

    from cogman.contrib.django import app
    from cogman.contrib.django.tasks_api import TaskResultDoesNotExist, TaskResultMismatch

    with pytest.raises(TaskResultDoesNotExist, match="no task result 'nope'"):
        total.get_result("nope")
    counted = count_orders.enqueue()
    with pytest.raises(TaskResultMismatch):
        total.get_result(counted.id)
    native = write_receipt.delay(10**9)  # a cogman task, not a django.tasks one
    with pytest.raises(TaskResultDoesNotExist, match=r"not a django\.tasks task"):
        total.get_backend().get_result(native.id)
    app.result(counted.id).get(timeout=60)


def test_the_pytest_plugin_runs_the_projects_tasks_in_process(project: dict[str, str], pytester: pytest.Pytester):
    """docs/django.md's testing example: ``cogman_app = cogman.contrib.django:app`` moves the project's app
    to memory:// for each test, ``cogman_worker`` runs its tasks, cogman's and django.tasks', in threads."""
    pytester.makeini("[pytest]\ncogman_app = cogman.contrib.django:app\n")
    pytester.makepyfile(
        test_shop="""
        from django.db import transaction
        from cogman.contrib.django.tasks_api import task_finished, task_started

        from shop.models import Order
        from shop.tasks import total, write_receipt


        def test_receipt(cogman_app, cogman_worker):
            with transaction.atomic():
                order = Order.objects.create(item="a pen")
                write_receipt.delay_on_commit(order.pk)
            cogman_app.join(timeout=10, fail_fast=True)
            order.refresh_from_db()
            assert order.receipt == "receipt for a pen"


        def test_total(cogman_app, cogman_worker):
            assert cogman_app.config.broker_url == "memory://"
            seen = []

            def on_signal(sender, task_result, signal, **kwargs):
                seen.append((signal, task_result.id, task_result.status))

            task_started.connect(on_signal, weak=False)
            task_finished.connect(on_signal, weak=False)
            enqueued = total.enqueue([1, 2])
            cogman_app.join(timeout=10, fail_fast=True)
            assert total.get_result(enqueued.id).return_value == 3
            assert seen == [(task_started, enqueued.id, "RUNNING"), (task_finished, enqueued.id, "SUCCESSFUL")]
        """
    )
    env = {**project, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setenv("PYTHONPATH", env["PYTHONPATH"])
        outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "django_setup")
    outcome.assert_outcomes(passed=2)


def test_backend_options_are_checked() -> None:
    from cogman.contrib.django import CogmanBackend
    from cogman.contrib.django.tasks_api import InvalidTaskBackend

    with pytest.raises(InvalidTaskBackend, match="unknown OPTIONS BROKER for CogmanBackend; known: HIGH_PRIORITY_MIN"):
        CogmanBackend("default", {"OPTIONS": {"BROKER": "amqp://"}})
    with pytest.raises(InvalidTaskBackend, match="HIGH_PRIORITY_MIN must be a whole number from -100 to 101"):
        CogmanBackend("default", {"OPTIONS": {"HIGH_PRIORITY_MIN": 500}})
    with pytest.raises(InvalidTaskBackend, match=r"by priority \(two queue families\), not by queue name"):
        CogmanBackend("default", {"QUEUES": ["default", "emails"]})
    backend = CogmanBackend("default", {"OPTIONS": {"HIGH_PRIORITY_MIN": 50}})
    from shop.tasks import total

    assert backend.priority_of(total) is Priority.LOW  # 10 < 50
    assert backend.priority_of(total.using(priority=50)) is Priority.HIGH


def run_cogman(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cogman", *args],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_worker_without_settings_or_without_the_installed_app_says_what_is_missing(project: dict[str, str]) -> None:
    unset = {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-m", "cogman", "-A", "cogman.contrib.django:app", "status", "x"],
        cwd=ROOT,
        env={**unset, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "cogman.contrib.django.app needs the Django settings: set DJANGO_SETTINGS_MODULE" in done.stderr
    done = run_cogman(
        {**project, "DJANGO_SETTINGS_MODULE": "mysite.settings_without_cogman"},
        "-A",
        "cogman.contrib.django:app",
        "status",
        "x",
    )
    assert done.returncode == 2
    assert "add 'cogman.contrib.django' to INSTALLED_APPS" in done.stderr


def test_importing_cogman_imports_no_django() -> None:
    code = "import sys, cogman, cogman.contrib.django; print(sorted(m for m in sys.modules if m.startswith('django')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
