"""Running tasks: the worker's threads and lifecycle (worker.py), one delivery's every outcome
(execution.py), calling handlers (handlers.py), time limits (limits.py; hard_limits.py with the
``--processes`` supervisor of cogman/cli/processes.py), interrupting cancelled attempts (cancelling.py),
and the in-process runners for memory:// and eager mode (inprocess.py, eager.py).

May import every package below the app (sending, workflows, scheduling, middleware, brokers, backends);
it sees the app through ``WorkerHost`` (worker.py) and ``SendingHost``, never ``cogman.app``.
"""
