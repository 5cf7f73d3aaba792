"""The harness's handle on a row's sender process (bench.client): start it, run phases, close it."""

from __future__ import annotations

import json
import select
import time
from pathlib import Path
from typing import Any

from bench.processes import ManagedProcess
from bench.systems import System

#: How long a sender may take to connect and import its library.
READY_TIMEOUT = 120.0


class PhaseFailed(RuntimeError):
    pass


class ClientProcess:
    def __init__(self, system: System, *, tasks: int, latency_samples: int, batch_size: int, log_path: Path) -> None:
        argv = ["-m", "bench.client", "--system", system.key, "--family", system.family]
        argv += ["--tasks", str(tasks), "--latency-samples", str(latency_samples), "--batch-size", str(batch_size)]
        if system.send_mode is not None:
            argv += ["--send-mode", system.send_mode]
        self.process = ManagedProcess(f"{system.key} sender", argv, log_path, pipes=True)

    def start(self) -> ClientProcess:
        self.process.start()
        self._read(READY_TIMEOUT)
        return self

    def run(self, phase: str, timeout: float) -> dict[str, Any]:
        """Run one phase in the sender; its figures, or PhaseFailed with the sender's reason."""
        popen = self.process.popen
        assert popen is not None and popen.stdin is not None
        popen.stdin.write(json.dumps({"phase": phase}) + "\n")
        popen.stdin.flush()
        return self._read(timeout)

    def close(self, timeout: float = 120.0) -> None:
        """Ask the sender to close (cogman's waits for its outbox) and exit; kill it if it does not."""
        try:
            if self.process.popen is not None and self.process.popen.poll() is None:
                self.run("quit", timeout)
        finally:
            self.process.stop(timeout=10.0)

    def _read(self, timeout: float) -> dict[str, Any]:
        popen = self.process.popen
        assert popen is not None and popen.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            readable, _, _ = select.select([popen.stdout], [], [], 1.0)
            if readable:
                line = popen.stdout.readline()
                if not line:
                    raise PhaseFailed(f"sender exited (code {popen.poll()}): {self.process.tail()}")
                reply: dict[str, Any] = json.loads(line)
                if "error" in reply:
                    raise PhaseFailed(f"{reply['error']} | {self.process.tail(3)}")
                return reply
            if popen.poll() is not None:
                raise PhaseFailed(f"sender exited (code {popen.returncode}): {self.process.tail()}")
            if time.monotonic() > deadline:
                raise PhaseFailed(f"sender gave no answer in {timeout:.0f} s")
