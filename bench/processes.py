"""Child processes of the harness (workers, senders), each in its own session and process group.

Their own group keeps a Ctrl-C meant for the harness from reaching them half-way through a phase, and
lets the harness kill a worker's whole tree (prefork children included) as a last resort. Every
process started here is registered until it is stopped, and ``stop_all`` (run in the harness's
``finally``) leaves none behind, on an exception or Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from bench.settings import STOP_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent

_running: set[ManagedProcess] = set()


class ProcessDied(RuntimeError):
    pass


class ManagedProcess:
    """``python ARGV...`` run from the project root, output to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, pipes: bool = False) -> None:
        self.name = name
        self.argv = [sys.executable, *argv]
        self.log_path = log_path
        self.pipes = pipes
        self.popen: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        pipe: Any = subprocess.PIPE if self.pipes else subprocess.DEVNULL
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=env,
            stdin=pipe,
            stdout=pipe if self.pipes else self._log,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        _running.add(self)
        return self

    def check(self) -> None:
        """Raise ProcessDied, with the end of its log, if the process has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise ProcessDied(f"{self.name} exited with code {self.popen.returncode}: {self.tail()}")

    def tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the whole group; returns the exit code."""
        if self.popen is None:
            return None
        try:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    print(f"bench: {self.name} did not stop in {timeout:.0f} s; killing it", file=sys.stderr)
        finally:
            self.kill_group()
        return self.popen.returncode

    def kill_group(self) -> None:
        """SIGKILL whatever is left in the group (orphaned pool children too) and reap the leader."""
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._log is not None:
            self._log.close()
        _running.discard(self)


def stop_all(timeout: float = 10.0) -> None:
    """Stop every process still running (the harness's ``finally``)."""
    for process in list(_running):
        process.stop(timeout)
