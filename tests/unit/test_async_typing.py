"""The asyncio client is typed like the sync API (``Task[P, R]``): mypy checks tests/unit/typing_check/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_async_api_is_typed_like_the_sync_one(tmp_path: Path) -> None:
    checked = ROOT / "tests" / "unit" / "typing_check" / "async_api.py"
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), str(checked)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
