"""Issue 19, item 6: no script call of a Redis query does work that grows with the number of records.

Filtering by name and status intersected whole indexes in one Lua call (0.6 s with 500k records, every
other client held up meanwhile; ``/metrics`` did it for each task name on each scrape). Now name and
status have an index of their own, pages are read by rank, and a primary key combined with another
filter is walked ``SCAN_BUDGET`` entries a call. Here: the work of every script call a query makes is
bounded (counted from what MONITOR shows each script asking Redis), and the results are the same rows
and totals as the old single-call intersection gave on the same data, TTL window and forgotten,
evicted and early-status records included.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis

from cogman import Config, Status
from cogman.backends import codec
from cogman.backends.base import TaskQuery
from cogman.backends.codec import to_us
from cogman.backends.redis import queries as redis_queries
from cogman.backends.redis import scripts
from cogman.backends.redis.backend import RedisBackend
from cogman.record import TaskRecord, utcnow
from tests.integration.test_backend_contract import attempt_of, record

#: The query script before issue 19 (cogman/backends/redis/scripts.py at d3f1c64), the reference for
#: the results: one call, intersecting the filters' indexes whole.
OLD_QUERY = """
local min, max, skip, limit, scratch = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]
local source = ARGV[10]
if #ARGV > 10 then
  local args = {'ZINTERSTORE', scratch, #ARGV - 9}
  for i = 10, #ARGV do args[#args + 1] = ARGV[i] end
  args[#args + 1] = 'AGGREGATE'
  args[#args + 1] = 'MAX'
  redis.call(unpack(args))
  source = scratch
end
local out = {redis.call('ZCOUNT', source, min, max)}
if limit > 0 then
  local ids = redis.call('ZRANGE', source, max, min, 'BYSCORE', 'REV', 'LIMIT', skip, limit)
  for _, id in ipairs(ids) do
    local key = P .. ':task:' .. id
    local kind = redis.call('TYPE', key)['ok']
    out[#out + 1] = id
    if kind == 'hash' or kind == 'none' then
      out[#out + 1] = redis.call('HGETALL', key)
    else
      out[#out + 1] = {'!', kind}
    end
  end
end
if source == scratch then redis.call('DEL', scratch) end
return out
"""

ODD = 'odd "name" \u00e9\U0001f600'  # quotes and non-ASCII: the index key holds the name's JSON text


def old_query(backend: RedisBackend, query: TaskQuery) -> tuple[list[str], int]:
    """What the old code returned for ``query``: the listed ids (records that exist) and the total."""
    keys = []
    if query.status is not None:
        keys.append(backend.index_key("status", query.status.value))
    if query.name is not None:
        keys.append(backend.index_key("name", query.name))
    if query.primary_key is not None:
        keys.append(backend.index_key("pk", query.primary_key))
    low = max(backend._window_floor(), to_us(query.created_after) if query.created_after else 0)
    high = to_us(query.created_before) if query.created_before else None
    if high is not None and low > high:
        return [], 0
    script = backend.client.register_script(scripts.source(OLD_QUERY))
    args = [*backend._common(), low, "+inf" if high is None else high, query.skip, query.limit]
    out = script(args=[*args, f"{backend.prefix}:scratch:old", *(keys or [backend.index_key("all")])])
    listed = [task_id.decode() for task_id, flat in zip(out[1::2], out[2::2], strict=True) if flat]
    return listed, int(out[0])


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    redis.Redis.from_url(redis_url).flushdb()
    made = RedisBackend(redis_url, Config(broker_url="memory://", backend_url=redis_url, redis_ttl=60))
    yield made
    made.close()


def populate(backend: RedisBackend, now: datetime) -> list[TaskRecord]:
    """A few hundred records over three names, every status, three primary keys, some sharing one
    ``created_at``, some out of the TTL window, a retry chain, statuses that came before their record,
    cancelled, forgotten records and evicted hashes."""
    names = ["job", "other", ODD]
    records = []
    for i in range(360):
        age = 90.0 + i if i % 40 == 0 else (i // 3) * 0.05  # every third shares its moment with two others
        records.append(record(names[i % 3], age=age, now=now, primary_key=[None, "k1", "k2", "k3"][i % 4]))
    early = records[-6:]  # their statuses arrive first, as after an outage replayed elsewhere
    for rec in early:
        backend.transition(rec.task_id, Status.IN_PROGRESS)
    backend.create(records)
    backend.transition_many([r.task_id for r in records[::2]], Status.QUEUED)
    for i, rec in enumerate(records[::5]):
        backend.transition(rec.task_id, Status.IN_PROGRESS)
        if i % 3 == 0:
            backend.transition(rec.task_id, Status.SUCCESS, result=i)
        elif i % 3 == 1:
            backend.transition(rec.task_id, Status.FAILED, fail_error="E: x")
    for rec in records[1:60:7]:
        original = rec.evolve(retry=2)
        backend.client.hset(backend.key(rec.task_id), "retry", "2")
        backend.spawn_retry(original.task_id, attempt_of(original, 2))
    for rec in records[2:300:41]:
        backend.cancel(rec.task_id)
    backend.delete([r.task_id for r in records[3:300:31]])  # forget()
    for rec in records[4:300:37]:
        backend.client.delete(backend.key(rec.task_id))  # evicted: its index entries stay
    return records


def queries(records: list[TaskRecord]) -> Iterator[TaskQuery]:
    moments = sorted(r.created_at for r in records)
    after, before = moments[len(moments) // 3], moments[2 * len(moments) // 3]  # ends shared by ties
    ranges = [(None, None), (after, None), (None, before), (after, before), (before, after)]
    for status in [None, *Status]:
        for name in [None, "job", ODD, "absent"]:
            for primary_key in [None, "k1", "absent"]:
                for created_after, created_before in ranges:
                    for skip, limit in [(0, 0), (0, 500), (4, 9), (40, 3)]:
                        yield TaskQuery(status, name, primary_key, created_after, created_before, skip, limit)


def test_every_filter_combination_gives_the_old_rows_and_totals(backend: RedisBackend, monkeypatch):
    monkeypatch.setattr(redis_queries, "SCAN_BUDGET", 7)  # many calls per combined query
    monkeypatch.setattr(redis_queries, "READ_CHUNK", 3)  # and pages read over several calls
    records = populate(backend, utcnow())
    checked = nonempty = 0
    for query in queries(records):
        page = backend.query(query)
        listed, total = old_query(backend, query)
        assert ([r.task_id for r in page.records], page.total) == (listed, total), query
        checked += 1
        nonempty += bool(listed)
    assert checked == (1 + len(Status)) * 4 * 3 * 5 * 4 and nonempty > 200  # the data leaves something to compare


def test_name_and_status_have_an_index_kept_by_every_write(backend: RedisBackend):
    rec = record(ODD, primary_key="k")
    key = f"cogman:idx:ns:{{}}:{codec.dumps(ODD)}"
    backend.create([rec])
    assert backend.client.zscore(key.format("initiated"), rec.task_id) == to_us(rec.created_at)
    assert 0 < backend.client.pttl(key.format("initiated")) <= 60_000
    backend.transition(rec.task_id, Status.IN_PROGRESS)
    assert backend.client.zscore(key.format("initiated"), rec.task_id) is None
    assert backend.client.zscore(key.format("in_progress"), rec.task_id) is not None
    backend.delete([rec.task_id])
    assert list(backend.client.scan_iter("cogman:idx:*")) == []


# The work of each script call, read off MONITOR on a redis-server of the test's own


class Monitor:
    """Every command the server runs, script calls with the commands each one ran, until ``stop``."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.lines: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()
        assert self.ready.wait(30)

    def _listen(self) -> None:
        with self.client.monitor() as monitor:
            self.ready.set()
            for line in monitor.listen():
                if line["command"] == "ECHO monitor-stop":
                    return
                self.lines.append(line)

    def stop(self) -> list[list[str]]:
        """The commands each EVALSHA ran, one list a call."""
        self.client.echo("monitor-stop")
        self._thread.join(30)
        calls: list[list[str]] = []
        for line in self.lines:
            if line["client_type"] == "lua" and calls:
                calls[-1].append(line["command"])
            elif line["command"].startswith("EVALSHA"):
                calls.append([])
        return calls


def entries_touched(command: str, sizes: dict[str, int]) -> int:
    """Index entries (or records) a command reads: a range its length, plus the entries a ``LIMIT``
    offset walks; an intersection its inputs; a lookup or a count (O(log N)) one."""
    words = command.split(" ")
    name = words[0].upper()
    if name == "ZRANGE":
        upper = [w.upper() for w in words]
        if "LIMIT" in upper:
            at = upper.index("LIMIT")
            return int(words[at + 1]) + int(words[at + 2])
        if "BYSCORE" in upper:
            return sizes.get(words[1], 0)
        return int(words[3]) - int(words[2]) + 1
    if name in ("ZINTERSTORE", "ZUNIONSTORE"):
        return sum(sizes.get(key, 0) for key in words[3 : 3 + int(words[2])])
    return 1


def test_no_script_call_of_a_query_reads_more_than_its_budget(private_redis, monkeypatch):
    url, server = private_redis
    budget, limit = 50, 20
    monkeypatch.setattr(redis_queries, "SCAN_BUDGET", budget, raising=False)  # (absent before)
    backend = RedisBackend(url, Config(broker_url="memory://", backend_url=url))
    try:
        now = utcnow()
        records = [record(age=i * 0.01, now=now, primary_key="k1" if i % 2 else "k2") for i in range(600)]
        backend.create(records)
        backend.transition_many([r.task_id for r in records], Status.QUEUED)
        sizes = {key.decode(): int(server.zcard(key)) for key in server.scan_iter("cogman:idx:*")}
        assert min(sizes.values()) >= 300
        asked = [
            TaskQuery(status=Status.QUEUED, name="job", limit=limit),  # what /metrics counts, with a page
            TaskQuery(status=Status.QUEUED, name="job", skip=550, limit=limit),  # a deep page
            TaskQuery(status=Status.QUEUED, primary_key="k1", limit=limit),
            TaskQuery(name="job", primary_key="k2", skip=200, limit=limit),
            TaskQuery(status=Status.QUEUED, name="job", primary_key="k1", limit=limit),
            TaskQuery(skip=500, limit=limit),
        ]
        monitor = Monitor(redis.Redis.from_url(url))
        pages = [backend.query(query) for query in asked]
        calls = monitor.stop()
        assert [page.total for page in pages] == [600, 600, 300, 300, 300, 600]
        assert all(len(page.records) == limit for page in pages)
        assert len(calls) > len(asked)  # the combined ones took several calls
        work = [sum(entries_touched(command, sizes) for command in call) for call in calls]
        # each entry walked: read, then looked up in the other index; each record read: TYPE and HGETALL
        assert max(work) <= 2 * budget + 2 * limit + 10, sorted(work)[-5:]
    finally:
        backend.close()


def test_metrics_count_each_name_and_status_with_one_lookup(backend: RedisBackend):
    """``/metrics`` asks for the total of each task name in each status: one index, no walk."""
    records = [record("job" if i % 4 else "other") for i in range(200)]
    backend.create(records)
    backend.transition_many([r.task_id for r in records[:120]], Status.QUEUED)
    seen: list[list[Any]] = []
    real = backend._run

    def spying(script: Any, args: list[Any]) -> Any:
        seen.append(args)
        return real(script, args)

    backend._run = spying  # type: ignore[method-assign]
    assert backend.query(TaskQuery(status=Status.QUEUED, name="job", limit=0)).total == 90
    assert backend.query(TaskQuery(status=Status.INITIATED, name="other", limit=0)).total == 20
    assert [args[1] for args in seen] == ['cogman:idx:ns:queued:"job"', 'cogman:idx:ns:initiated:"other"']


def test_a_window_of_timestamps_pages_by_rank_from_its_newest_entry(backend: RedisBackend):
    now = utcnow()
    records = [record(age=i * 0.01, now=now) for i in range(50)]
    backend.create(records)
    window = TaskQuery(created_after=records[30].created_at, created_before=records[10].created_at, skip=5, limit=4)
    assert [r.task_id for r in backend.query(window).records] == [r.task_id for r in records[15:19]]
    assert backend.query(window).total == 21
    assert backend.query(TaskQuery(created_before=now - timedelta(hours=1))).total == 0


def test_a_walk_whose_last_entry_leaves_the_index_resumes_below_it(backend: RedisBackend, monkeypatch):
    """The next call finds its place by the entry the previous one ended on; forgotten meanwhile, the
    walk goes on below its score: nothing counted twice, nothing skipped."""
    monkeypatch.setattr(redis_queries, "SCAN_BUDGET", 5)
    now = utcnow()
    records = [record(age=i * 0.01, now=now, primary_key="k" if i % 2 else None) for i in range(40)]
    backend.create(records)
    keyed = [r for r in records if r.primary_key == "k"]  # the smaller index: the one walked
    calls: list[list[Any]] = []
    real = backend._run

    def forgetting_after_the_first_call(script: Any, args: list[Any], *keys: Any) -> Any:
        if script is backend._scan:  # the delete's own script call goes through here too
            if len(calls) == 1:
                backend.delete([keyed[4].task_id])  # the entry the first call ended on
            calls.append(args)
        return real(script, args, *keys)

    backend._run = forgetting_after_the_first_call  # type: ignore[method-assign]
    page = backend.query(TaskQuery(status=Status.INITIATED, primary_key="k", limit=50))
    assert calls[1][4] == keyed[4].task_id.encode()  # the second call resumed from the forgotten one
    assert page.total == 20  # counted once, before it was forgotten
    assert [r.task_id for r in page.records] == [r.task_id for r in keyed if r is not keyed[4]]
