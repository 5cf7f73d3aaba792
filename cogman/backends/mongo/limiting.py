"""Rate limits and concurrency slots in MongoDB: the Mongo backend's ``limits()``.

A ``<collection>_limits`` collection beside the records holds one document per scope: ``rate:<scope>``
with the starts of the last window, ``slots:<scope>`` with ``[holder, lease expiry]`` pairs, and
``waiting:<task id>`` notes. Each step reads the document and writes it back only if its version ``v``
is unchanged (a conditional update; an insert for a new scope, whose duplicate key means another
writer won): the arithmetic of the memory store, made atomic per scope. Times are this machine's
wall clock, so the workers' clocks must agree (NTP) to share a window; a TTL index on ``expires_at``
removes idle scopes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import pymongo
from pymongo.errors import DuplicateKeyError

from cogman.errors import BackendUnavailable
from cogman.limits.policy import Rate, rate_wait
from cogman.record import utcnow

if TYPE_CHECKING:
    from cogman.backends.outage import WriteBuffer

T = TypeVar("T")
#: Conflicting writers in a row a step outlasts before it reports the store as unavailable (and the
#: worker waits and asks again): each conflict means another worker's step succeeded.
MAX_TRIES = 50
Change = Callable[[dict[str, Any] | None, float], tuple[dict[str, Any] | None, T]]


class MongoLimits:
    def __init__(self, collection: Any, buffer: WriteBuffer) -> None:
        self.limits = collection.database[f"{collection.name}_limits"]
        self.buffer = buffer
        self._indexed = False

    def take_start(self, scope: str, rate: Rate, token: str) -> float:
        def change(doc: dict[str, Any] | None, now: float) -> tuple[dict[str, Any] | None, float]:
            logged = [] if doc is None else [s for s in doc["starts"] if s[0] > now - rate.period]
            if any(s[1] == token for s in logged):
                return None, 0.0
            logged = logged[-rate.count :] if len(logged) > rate.count else logged
            wait = rate_wait([s[0] for s in logged], now, rate)
            if wait:
                return None, wait
            return {"starts": [*logged, [now, token]], "expires_at": _after(rate.period)}, 0.0

        return self._swap(f"rate:{scope}", change, f"take a start of {scope} ({rate})")

    def acquire_slot(self, scope: str, holder: str, limit: int, lease: float) -> bool:
        def change(doc: dict[str, Any] | None, now: float) -> tuple[dict[str, Any] | None, bool]:
            live = _live(doc, now)
            if all(h != holder for h, _ in live) and len(live) >= limit:
                return None, False
            held = [[h, until] for h, until in live if h != holder] + [[holder, now + lease]]
            return {"holders": held, "expires_at": _after(lease)}, True

        return self._swap(f"slots:{scope}", change, f"take a slot of {scope}")

    def renew_slots(self, held: Sequence[tuple[str, str]], lease: float) -> list[tuple[str, str]]:
        lost = []
        for scope, holder in held:

            def change(doc: dict[str, Any] | None, now: float, holder: str = holder) -> tuple[Any, bool]:
                live = _live(doc, now)
                if all(h != holder for h, _ in live):
                    return None, False
                renewed = [[h, now + lease if h == holder else until] for h, until in live]
                return {"holders": renewed, "expires_at": _after(lease)}, True

            if not self._swap(f"slots:{scope}", change, f"renew a slot of {scope}"):
                lost.append((scope, holder))
        return lost

    def release_slot(self, scope: str, holder: str) -> None:
        def change(doc: dict[str, Any] | None, now: float) -> tuple[dict[str, Any] | None, None]:
            if doc is None or all(h != holder for h, _ in doc["holders"]):
                return None, None
            return {"holders": [[h, until] for h, until in _live(doc, now) if h != holder]}, None

        self._swap(f"slots:{scope}", change, f"free a slot of {scope}")

    def note_waiting(self, task_id: str, reason: str, ttl: float) -> None:
        doc = {"reason": reason, "until": time.time() + ttl, "expires_at": _after(ttl)}
        self.buffer.call(
            lambda: self.limits.replace_one({"_id": f"waiting:{task_id}"}, doc, upsert=True),
            f"note why {task_id} waits",
        )

    def waiting(self, task_id: str) -> str | None:
        doc = self.buffer.call(lambda: self.limits.find_one({"_id": f"waiting:{task_id}"}), f"read why {task_id} waits")
        return None if doc is None or doc["until"] <= time.time() else str(doc["reason"])

    def _swap(self, key: str, change: Change[T], what: str) -> T:
        def attempt() -> T:
            self._index()
            for _ in range(MAX_TRIES):
                doc = self.limits.find_one({"_id": key})
                fields, answer = change(doc, time.time())
                if fields is None:
                    return answer
                if doc is None:
                    try:
                        self.limits.insert_one({"_id": key, "v": 1, **fields})
                    except DuplicateKeyError:
                        continue
                    return answer
                if self.limits.update_one(
                    {"_id": key, "v": doc["v"]}, {"$set": {**fields, "v": doc["v"] + 1}}
                ).modified_count:
                    return answer
            raise BackendUnavailable(f"MongoDB: {what}: {MAX_TRIES} conflicting writers in a row")

        return self.buffer.call(attempt, what)

    def _index(self) -> None:
        if not self._indexed:
            self.limits.create_index([("expires_at", pymongo.ASCENDING)], name="expires_at_ttl", expireAfterSeconds=0)
            self._indexed = True


def _live(doc: dict[str, Any] | None, now: float) -> list[tuple[str, float]]:
    return [] if doc is None else [(h, until) for h, until in doc["holders"] if until > now]


def _after(seconds: float) -> Any:
    return utcnow() + timedelta(seconds=seconds + 60)


def store_of(backend: Any) -> MongoLimits:
    """The backend's one store, made on first use, so its TTL index is made once."""
    store: MongoLimits | None = backend.__dict__.get("_limit_store")
    if store is None:
        store = backend.__dict__.setdefault("_limit_store", MongoLimits(backend.collection, backend.buffer))
    return store
