"""How the MongoDB backend reaches its server: which errors are an outage, and the in-process
``mongomock://`` clients the tests and the docs' examples use."""

from __future__ import annotations

import threading
from typing import Any

from pymongo.errors import ConnectionFailure, PyMongoError


def is_transient(exc: BaseException) -> bool:
    """An unreachable server, a failover (not primary), or a write the driver labels retryable."""
    if isinstance(exc, ConnectionFailure):
        return True
    return isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError")


#: ``mongomock://NAME`` clients, shared per URL so two backends on one URL see the same data.
_MOCKS: dict[str, Any] = {}
_MOCKS_LOCK = threading.Lock()


def mock_client(url: str) -> Any:
    import mongomock

    with _MOCKS_LOCK:
        if url not in _MOCKS:
            _MOCKS[url] = mongomock.MongoClient(tz_aware=True)
        return _MOCKS[url]
