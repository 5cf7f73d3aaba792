"""What each figure means, printed under every report (and summarised in docs/performance.md)."""

DEFINITIONS = """
Every task of every system is a no-op that does exactly one Redis `INCR` on its system's counter;
completion is read from that counter (polled every 2 ms by the harness), never from a result backend.
Each row of each round runs from a purged queue and an empty Redis database 14; the systems run
interleaved (round 1: every row, round 2: every row...; the order rotates by one each round). Each
row's sender runs in a fresh process of its own, one sending thread. Before any clock starts, one
warm-up task is sent and purged, so connecting is not timed.

- **single send**: N tasks sent one at a time with the system's usual call (`.delay()`,
  `apply_async`, `actor.send`, `producer.publish`), worker stopped; N / (time from the first call to
  the return of the last). A sender that returns before the broker's confirm is timed to its return;
  the harness then waits until RabbitMQ holds all N (before the worker starts), which gives the
  second table's "until RabbitMQ holds all": N / (first send to the queue depth reaching N, polled
  every 10 ms). Same for batches.
- **send_many / batch**: N tasks in batches of 500, worker stopped: cogman's `send_many`, and for raw
  kombu a confirm-mode channel publishing 500 messages and then awaiting their 500 confirms. n/a for
  systems without a batch send (Celery, Dramatiq, raw kombu without confirms).
- **end to end**: worker already running and warm, N single sends from one thread; N / (time from
  the first send to the counter reaching N).
- **drain**: a backlog of N (the single-send phase's tasks) with the worker stopped; the worker is then
  started. The clock starts when the counter is first seen above zero, so the worker's boot is
  excluded: rate = (N - count at that moment) / (time to the counter reaching N).
- **send->start p50 / p99**: a closed-loop sample (`--latency-samples`, 1,000; 200 with `--quick`) to a
  running, otherwise idle worker: each task carries the sender's `time.time()` taken just before the
  send call, the next is sent only once the previous completed (plus 1 ms), so no task queues behind
  another; the task body records its own `time.time()` at start minus that, into a Redis list.
- **worker peak RSS**: the worker's process tree (supervisor, pool and helper processes) sampled with
  psutil every 100 ms from its start to its stop (drain, end to end, latency): the peak of the sum,
  and the peak of its largest single process (the per-process target). MiB.
- Medians of the rounds, min-max in parentheses; ratios are ratios of medians. For milliseconds and
  MiB lower is better, so a ratio below 1 is cogman ahead.

Workers: cogman `--processes 2 -c 8` (Redis backend); Celery prefork `-c 2`, `acks_late`, Redis
results, JSON, started `--without-gossip --without-mingle --without-heartbeat`; Dramatiq `-p 2 -t 8`,
Results middleware on Redis (`store_results=True`); the "with confirms" rows are the same peers with
publisher confirms on (Celery `broker_transport_options={"confirm_publish": True}`, Dramatiq
`confirm_delivery=True`): cogman's guarantees; raw kombu: one process, one thread, prefetch 32,
INCR then ack. All on the same RabbitMQ vhost `cogman_bench` (own queue names per system) and Redis
database 14.
"""
