"""A Flask app that sends tasks and reads their results with the synchronous API.

Flask serves each request in a thread (``threaded=True`` is its default), so the plain ``delay`` and
``get`` are the right calls here: a request waiting for a result holds its own thread, nobody else's.

On RabbitMQ and Redis (from the repository root; the worker is another process):

    export COGMAN_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//
    export COGMAN_BACKEND_URL=redis://127.0.0.1:6379/0
    cogman -A examples.flask_app worker -l INFO                  # terminal 1
    flask --app examples.flask_app run --port 5000               # terminal 2
    curl -X POST 'http://127.0.0.1:5000/orders?items=3'          # {"task_id": "..."}
    curl 'http://127.0.0.1:5000/tasks/TASK_ID/result'            # {"task_id": ..., "result": 30}

Without those variables it runs on the embedded memory:// transport, with a worker started in the same
process. docs/flask.md walks through it.
"""

from __future__ import annotations

import atexit
from typing import Any

from flask import Flask, abort, jsonify, request

from cogman import App, TaskFailed, TaskNotFound

app = App("flask-example")


@app.task(name="orders.price", retry=2)
def price(items: int) -> int:
    """The slow work a request should not wait for."""
    if items < 0:
        raise ValueError(f"cannot price {items} items")
    return items * 10


def create_app() -> Flask:
    """The Flask app (``flask --app examples.flask_app`` finds this factory)."""
    web = Flask(__name__)
    if app.why_no_worker():  # memory:// only: a worker in this process, stopped at exit
        atexit.register(app.start_background(concurrency=2).stop)

    @web.post("/orders")
    def create_order() -> tuple[Any, int]:
        items = request.args.get("items", type=int)
        if items is None:
            abort(400, "items must be an integer")
        handle = price.delay(items)  # returns once recorded and handed to the broker
        return jsonify(task_id=handle.id), 202

    @web.get("/tasks/<task_id>")
    def task_status(task_id: str) -> Any:
        try:
            return jsonify(task_id=task_id, status=app.result(task_id).status.value)
        except TaskNotFound:
            abort(404, f"no task {task_id}")

    @web.get("/tasks/<task_id>/result")
    def task_result(task_id: str) -> Any:
        timeout = request.args.get("timeout", default=10.0, type=float)
        try:
            return jsonify(task_id=task_id, result=app.result(task_id).get(timeout=timeout))
        except TaskNotFound:
            abort(404, f"no task {task_id}")
        except TimeoutError:
            abort(504, f"task {task_id} not finished after {timeout} s")
        except TaskFailed as failed:
            return jsonify(task_id=task_id, error=failed.error, attempts=failed.attempts), 500

    return web
