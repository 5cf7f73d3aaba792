"""The captured Go Cogman test vectors (/work/shared/reference/go-wire, README.md there), for the tests."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

VECTORS = Path(os.environ.get("COGMAN_GO_WIRE", "/work/shared/reference/go-wire"))


@cache
def load(name: str) -> Any:
    """One file of the vectors, parsed (``messages``, ``records-run``, ...)."""
    return json.loads((VECTORS / f"{name}.json").read_text())


def message(name: str) -> dict[str, Any]:
    """One captured message of messages.json: ``high_json``, ``low_raw``, ``retry_pk``, ``unknown_name``."""
    found: dict[str, Any] = load("messages")["messages"][name]
    return found


def every_raw_record() -> list[str]:
    """Every record Go stored, as the exact JSON text it wrote (each file's ``raw`` values)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            raw = value.get("raw")
            if isinstance(raw, str) and raw.startswith('{"TaskID"'):
                found.append(raw)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for name in ("records-send", "records-run", "records-retry", "unknown-task"):
        walk(load(name))
    return found


def shape(raw: str | bytes) -> dict[str, Any]:
    """A Go record with what varies from run to run (ids, times, durations) blanked, key order kept."""
    value = json.loads(raw)
    for name in ("TaskID", "OriginalTaskID", "CreatedAt", "UpdatedAt"):
        value[name] = "<varies>"
    if value.get("Duration") is not None:
        value["Duration"] = "<a number>"
    return value
