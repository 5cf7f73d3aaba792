"""A FastAPI app that sends tasks and reads their results without blocking its event loop.

On RabbitMQ and Redis (from the repository root; the worker is another process):

    export COGMAN_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//
    export COGMAN_BACKEND_URL=redis://127.0.0.1:6379/0
    cogman -A examples.fastapi_app worker -l INFO          # terminal 1
    uvicorn examples.fastapi_app:api --port 8000             # terminal 2
    curl -X POST 'http://127.0.0.1:8000/orders?items=3'      # {"task_id": "..."}
    curl 'http://127.0.0.1:8000/tasks/TASK_ID'               # {"task_id": ..., "status": "success"}
    curl 'http://127.0.0.1:8000/tasks/TASK_ID/result'        # {"task_id": ..., "result": 30}

Without those variables it runs on the embedded memory:// transport, and the app starts a worker in its
own process (only a worker there sees memory:// tasks). docs/fastapi.md walks through it.

Tracing: nothing to add here. With ``opentelemetry-api`` installed and a tracer provider configured (for
FastAPI, e.g. opentelemetry-instrumentation-fastapi), cogman traces each send as a child of the request's
span and the worker's run as a child of the send (issue 24; ``App(tracing=False)`` turns it off).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

from cogman import App, TaskFailed, TaskNotFound

app = App("fastapi-example")


@app.task(name="orders.price", retry=2)
def price(items: int) -> int:
    """The slow work a request should not wait for."""
    if items < 0:
        raise ValueError(f"cannot price {items} items")
    return items * 10


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    worker = app.start_background(concurrency=2) if app.why_no_worker() else None  # memory:// only
    yield
    if worker is not None:
        worker.stop()
    await app.aclose()  # waits for the sends in flight, drains the outbox, closes the connections


api = FastAPI(title="cogman FastAPI example", lifespan=lifespan)


@api.post("/orders", status_code=202)
async def create_order(items: int) -> dict[str, str]:
    """Queue the work; returns once it is recorded and handed to the broker."""
    handle = await price.delay_async(items)
    return {"task_id": handle.id}


@api.get("/tasks/{task_id}")
async def task_status(task_id: str) -> dict[str, str]:
    try:
        status = await app.result(task_id).status_async()
    except TaskNotFound:
        raise HTTPException(404, f"no task {task_id}") from None
    return {"task_id": task_id, "status": status.value}


@api.get("/tasks/{task_id}/result")
async def task_result(task_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Wait up to ``timeout`` seconds for the result; other requests are served meanwhile."""
    try:
        value = await app.result(task_id).get_async(timeout=timeout)
    except TaskNotFound:
        raise HTTPException(404, f"no task {task_id}") from None
    except TimeoutError:
        raise HTTPException(504, f"task {task_id} not finished after {timeout} s") from None
    except TaskFailed as failed:
        raise HTTPException(500, {"task_id": task_id, "error": failed.error, "attempts": failed.attempts}) from None
    return {"task_id": task_id, "result": value}
