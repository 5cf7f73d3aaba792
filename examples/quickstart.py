"""Send tasks and read their results, all in one process on the embedded default.

python examples/quickstart.py
"""

from cogman import App, TaskContext, TaskFailed

app = App("quickstart", broker="memory://", backend="memory://")


@app.task(name="quickstart.add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="quickstart.flaky", retry=2, bind=True)
def flaky(ctx: TaskContext, text: str) -> str:
    if ctx.attempt < 3:
        raise ConnectionError(f"attempt {ctx.attempt} lost the connection")
    return f"{text} after {ctx.attempt} attempts"


@app.task(name="quickstart.broken", priority="low")
def broken() -> None:
    raise ValueError("this one always fails")


if __name__ == "__main__":
    worker = app.start_background(concurrency=4)
    try:
        print("add:", add.delay(2, 3).get(timeout=10))
        result = flaky.delay("hello")
        print("flaky:", result.get(timeout=10), "| status:", result.status.value)
        try:
            broken.delay().get(timeout=10)
        except TaskFailed as failure:
            print("broken:", failure.error)
    finally:
        worker.stop()
