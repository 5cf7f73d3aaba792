"""bench/profile.py's reading of py-spy's collapsed stacks (the shares docs/performance.md quotes)."""

from __future__ import annotations

from pathlib import Path

from bench.profile import frame_name, top_frames


def test_frames_are_named_by_function_and_file_without_line_or_install_prefix():
    assert frame_name("send_task (/venv/lib/python3.11/site-packages/kombu/x.py:12)") == "send_task (kombu/x.py)"
    assert frame_name("<module> (bench/profile.py:3)") == "<module> (bench/profile.py)"


def test_self_and_inclusive_shares(tmp_path: Path):
    collapsed = tmp_path / "stacks.txt"
    collapsed.write_text(
        "main (a.py:1);send (b.py:2);write (c.py:3) 6\n"
        "thread (0x7F01);main (a.py:1);send (b.py:9) 3\n"  # with py-spy's --threads
        'process 7:"python x.py";loop (d.py:1) 1\n'  # with --subprocesses
    )
    table = top_frames(collapsed, 5)
    assert table.startswith("10 samples")
    assert "| 60.0% | 60.0% | `write (c.py)` |" in table
    assert "| 30.0% | 90.0% | `send (b.py)` |" in table  # two lines of one function are one frame
    assert "| 0.0% | 90.0% | `main (a.py)` |" in table
    assert "| 10.0% | 10.0% | `loop (d.py)` |" in table
