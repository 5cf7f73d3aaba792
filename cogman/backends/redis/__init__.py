"""The Redis task log: the backend (backend.py) with one Lua script per state change (scripts.py), its
reply handling and per-thread connections (wire.py), the key layout (keys.py) and its shards (shards.py),
Sentinel and Redis Cluster URLs and clients (sentinel.py, cluster.py), and helpers for creating, querying
(queries.py; fanout.py over shards), retries (spawn.py), workers and workflows, each taking the connection
and the key layout it needs (a ``Link``, never the backend class).

May import ``cogman.backends`` base modules and the shared vocabulary only.
"""
