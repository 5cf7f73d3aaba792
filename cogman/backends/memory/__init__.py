"""The in-process backend (``memory://``): the embedded default, and the reference behaviour the Redis
and MongoDB backends are tested against (tests/integration/test_backend_contract.py).

``backend.py`` holds the records and the status machine's moves; each other concern has its own
module, as in ``redis/`` and ``mongo/``: ``cancel.py``, ``unique.py``, ``limits.py``, ``queries.py``
(listing, counting, queue stats), ``workers.py`` (heartbeats), ``workflows.py`` (a record's claim, a
chord's set), ``go_records.py`` (Go Cogman's records), and ``fidelity.py`` (the encoding, copies and
TTLs that make it answer as Redis does). May
import ``cogman.backends`` (base, codec), ``record``, ``status``, ``gowire`` and ``limits``; outside
the backends, only the factory, ``aio/waiting.py`` (its wake-up callback) and tests import it.
"""

from cogman.backends.memory.backend import MemoryBackend

__all__ = ["MemoryBackend"]
