"""The raw kombu consumer: one process, one thread; per message the task body's ``INCR``, then the ack.

``python -m bench.kombu_worker --queue Q --family F``. It is the floor any task runner on kombu pays:
no task log, no result, no status.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
from types import FrameType
from typing import Any

from kombu import Connection, Consumer, Queue

from bench.settings import AMQP_URL
from bench.task_body import complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--family", required=True)
    parser.add_argument("--prefetch", type=int, default=32)
    args = parser.parse_args()
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def on_message(body: Any, message: Any) -> None:
        complete(args.family, float(body["sent_at"]))
        message.ack()

    with Connection(AMQP_URL) as connection:
        queue = Queue(args.queue, durable=True, auto_delete=False)
        with Consumer(connection, [queue], callbacks=[on_message], prefetch_count=args.prefetch, accept=["json"]):
            while not stopping:
                with contextlib.suppress(TimeoutError):
                    connection.drain_events(timeout=0.5)


if __name__ == "__main__":
    main()
