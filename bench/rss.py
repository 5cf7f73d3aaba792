"""Worker memory: the resident set of a worker's whole process tree, sampled while it runs.

Two figures: the peak of the sum over the tree (what the worker costs the machine: supervisor, pool
and helper processes included) and the peak of its largest single process (what the RSS target is
about: "per process").
"""

from __future__ import annotations

import threading

import psutil

from bench.settings import RSS_INTERVAL

MIB = 1024 * 1024


class RssSampler:
    def __init__(self, root_pid: int, interval: float = RSS_INTERVAL) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.peak_total = 0
        self.peak_process = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float | None]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self.peak_total:
            return {"rss_total_mib": None, "rss_process_mib": None}
        return {"rss_total_mib": self.peak_total / MIB, "rss_process_mib": self.peak_process / MIB}

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for process in tree:
            try:
                rss = process.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                continue
            total += rss
            self.peak_process = max(self.peak_process, rss)
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)
