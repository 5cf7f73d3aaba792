"""examples/ run as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs():
    done = subprocess.run(
        [sys.executable, "examples/quickstart.py"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "add: 5" in done.stdout
    assert "flaky: hello after 3 attempts | status: success" in done.stdout
    assert "broken: ValueError: this one always fails" in done.stdout
