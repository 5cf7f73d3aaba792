"""The benchmark's worker app with stage stamps (bench/stages.py), for ``bench/latency_stages.py``:
``cogman -A bench.stages_app:app worker``. Each worker process writes its stamps to Redis as it stops."""

from __future__ import annotations

from bench.cogman_tasks import make_app
from bench.settings import REDIS_URL
from bench.stages import FlushStamps, Stamps, instrument_worker

stamps = Stamps()
instrument_worker(stamps)
app = make_app(middleware=[FlushStamps(stamps, REDIS_URL)])
