"""Sessions: tests (whole suite, needs RabbitMQ and Redis on 127.0.0.1), cluster, django (Python 3.12), lint,
typecheck, demo, bench, profile, tracing_cost, soak."""

import os
import subprocess
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev,api]")
    session.run("pytest", "-q", "-ra", *session.posargs)


@nox.session
def cluster(session: nox.Session) -> None:
    """The cluster tests (tests/cluster): a three-node RabbitMQ cluster started on 127.0.0.1:5681-5683 for
    the session, quorum queues and node faults; not part of ``tests`` (docs/scaling.md)."""
    session.install("-e", ".[dev,api]")
    session.run("pytest", "-q", "-ra", "-s", "tests/cluster", *session.posargs, env={"COGMAN_CLUSTER_TESTS": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "cogman", "tests", "examples", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "cogman", "tests", "examples", "bench", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev,api]")
    session.run("mypy", "cogman")


@nox.session
def demo(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("cogman", "demo", *session.posargs)


#: Only the benchmark needs these; none of them is a cogman dependency.
BENCH_PACKAGES = ("celery[redis]", "dramatiq[rabbitmq,redis]", "psutil", "matplotlib")


@nox.session
def bench(session: nox.Session) -> None:
    """cogman against raw kombu, Celery and Dramatiq (RabbitMQ and Redis on 127.0.0.1); results in
    bench/results/. ``nox -s bench -- --quick`` for a smoke run; see docs/performance.md."""
    session.install("-e", ".", *BENCH_PACKAGES)
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def profile(session: nox.Session) -> None:
    """py-spy on a sending client and a draining worker (RabbitMQ and Redis on 127.0.0.1); top frames printed,
    collapsed stacks in bench/results/profile-*.txt. ``nox -s profile -- --tasks 5000``."""
    session.install("-e", ".", "py-spy", "psutil")
    session.run("python", "bench/profile.py", *session.posargs)


@nox.session
def tracing_cost(session: nox.Session) -> None:
    """What OpenTelemetry tracing costs a task, absent, off and on (memory://, no server); ``nox -s
    tracing_cost -- -n 20000 --repeat 5``. See docs/tracing.md."""
    session.install("-e", ".[otel]", "opentelemetry-sdk")
    session.run("python", "bench/tracing_cost.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Tasks sent for a while through cut connections and killed workers, then every accepted one checked
    (RabbitMQ and Redis on 127.0.0.1); ``nox -s soak -- --seconds 600``. See docs/reliability.md."""
    session.install("-e", ".")
    session.run("python", "bench/soak.py", *session.posargs)


def interpreter(version: str) -> str:
    """``version`` (``"3.12"``) if ``python3.12`` runs, else the newest pyenv ``3.12.*`` by its path: pyenv's
    shim refuses a version that is not selected (``pyenv global``/``PYENV_VERSION``), so nox would skip."""
    try:
        subprocess.run([f"python{version}", "--version"], check=True, capture_output=True, timeout=30)
        return version
    except (OSError, subprocess.SubprocessError):
        pass
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    patches = {path: path.parts[-3][len(version) + 1 :] for path in root.glob(f"{version}.*/bin/python{version}")}
    found = sorted((int(patch), str(path)) for path, patch in patches.items() if patch.isdigit())
    return found[-1][1] if found else version


@nox.session
@nox.parametrize(
    ("python", "packages"),
    [
        (interpreter("3.12"), "django>=6"),  # Django's own django.tasks
        (interpreter("3.11"), "django>=5.2,<6 django-tasks>=0.12"),  # Django 5.2 LTS and the backport
    ],
    ids=["6", "5.2"],
)
def django(session: nox.Session, packages: str) -> None:
    """The Django tests (tests/django_project, docs/django.md), on Django 6 (Python 3.12, as it needs) and on
    Django 5.2 with the django-tasks backport (Python 3.11); the main suite has no Django. RabbitMQ and Redis
    on 127.0.0.1, as for ``tests``."""
    session.install("-e", ".[dev,api]", *packages.split())
    session.run("pytest", "-q", "-ra", "tests/django_project", *session.posargs, env={"COGMAN_DJANGO_TESTS": "1"})
