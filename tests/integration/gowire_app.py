"""The Go-wire tasks the captured Go server registered (go-wire/README.md), for ``cogman worker``:
``cogman -A tests.integration.gowire_app worker``. Each handler appends what it received to the file
named by ``GOWIRE_RUNS`` (one JSON line: name, payload base64), then fails when the payload holds FAIL,
as Go's did (without its 1 s sleep)."""

from __future__ import annotations

import base64
import json
import os

from cogman import App

app = App("gowire", broker="memory://", backend="memory://")


def _ran(name: str, payload: bytes) -> None:
    line = json.dumps({"name": name, "payload_b64": base64.b64encode(payload).decode()})
    with open(os.environ["GOWIRE_RUNS"], "a") as runs:
        runs.write(line + "\n")
    if b"FAIL" in payload:
        raise RuntimeError("asked to fail")


@app.task(name="gowire.echo", wire="go")
def echo(payload: bytes) -> None:
    _ran("gowire.echo", payload)


@app.task(name="gowire.echo_low", wire="go", priority="low")
async def echo_low(payload: bytes) -> None:
    _ran("gowire.echo_low", payload)


@app.task(name="gowire.fail", wire="go")
def fail(payload: bytes) -> None:
    _ran("gowire.fail", payload)


@app.task(name="cogman.plain")
def plain(value: int) -> int:
    return value
