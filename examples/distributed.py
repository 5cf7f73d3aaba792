"""Tasks shared by separate client and worker processes, over RabbitMQ and Redis on 127.0.0.1.

Start a worker:   cogman -A examples.distributed worker -l INFO   (walkthrough: examples/README.md)
Send tasks:       python -m examples.distributed
"""

import os

from cogman import App

app = App(
    "distributed",
    broker=os.environ.get("COGMAN_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("COGMAN_BACKEND_URL", "redis://127.0.0.1:6379/0"),
)


@app.task(name="distributed.square", retry=1)
def square(x: int) -> int:
    return x * x


@app.task(name="distributed.digest", priority="low")
def digest(text: str) -> int:
    return sum(map(ord, text))


if __name__ == "__main__":
    results = [square.delay(i) for i in range(10)] + [digest.delay("cogman")]
    print([r.get(timeout=30) for r in results])
