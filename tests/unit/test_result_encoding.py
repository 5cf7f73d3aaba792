"""The checks a worker makes on what it records (issue 19, items 5 and 13): a result must be JSON of at
most ``max_result_size`` bytes, and an error or traceback is cut to ``max_error_size`` bytes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from cogman import App, Config
from cogman.errors import ConfigError, ResultRejected
from cogman.record import clip
from cogman.worker.handlers import check_result


@pytest.fixture
def charge(app: App) -> Any:
    @app.task(name="shop.charge")
    def charge() -> None:
        return None

    return charge


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({1, 2}, "set"),
        ({"order": {"when": date(2024, 1, 2)}}, "date"),  # named wherever it is nested
        ([1, Decimal("1.5")], "Decimal"),
        ({(1, 2): "pair"}, "TypeError: keys must be str, int, float, bool or None, not tuple"),
        ({"total": float("inf")}, "ValueError: Out of range float values are not JSON compliant"),
    ],
)
def test_a_result_json_cannot_carry_is_refused_naming_what(charge: Any, value: Any, named: str):
    with pytest.raises(ResultRejected) as refused:
        check_result(charge, value, 1000)
    assert str(refused.value) == f"result of shop.charge is not JSON-serialisable: {named}"


def test_a_result_that_contains_itself_is_refused(charge: Any):
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ResultRejected, match="not JSON-serialisable: ValueError: Circular reference detected"):
        check_result(charge, looped, 1000)


def test_the_size_is_that_of_the_stored_json_and_the_limit_is_inclusive(charge: Any):
    check_result(charge, {"a": "é"}, len('{"a":"\\u00e9"}'))  # compact and ASCII, as the backends store it
    with pytest.raises(ResultRejected) as refused:
        check_result(charge, {"a": "é"}, 13)
    assert str(refused.value) == "result of shop.charge is 14 bytes of JSON, over max_result_size=13"


def test_short_text_is_kept_whole():
    assert clip("ValueError: boom", 16) == "ValueError: boom"
    assert clip("é" * 8, 16) == "é" * 8


def test_an_error_keeps_its_start_and_never_half_a_character():
    text = "a" + "é" * 10  # 21 bytes
    assert clip(text, 10) == "a" + "é" * 4 + "...[truncated 12 bytes]"  # 9 bytes kept: a 10th splits an é
    assert clip("x" * 100, 10) == "x" * 10 + "...[truncated 90 bytes]"


def test_a_traceback_keeps_its_end():
    text = "Traceback ...\n" + "é" * 10
    clipped = clip(text, 9, keep_end=True)
    assert clipped == f"...[truncated {len(text.encode()) - 8} bytes]\n" + "é" * 4


def test_lone_surrogates_survive_a_cut():
    text = "bad name: \udcff" * 10
    clipped = clip(text, 30)
    assert clipped.startswith("bad name: \udcffbad name: ") and clipped.endswith(" bytes]")


@pytest.mark.parametrize("option", ["max_result_size", "max_error_size"])
def test_the_limits_must_be_positive(option: str):
    with pytest.raises(ConfigError, match=f"{option} must be at least 1"):
        Config(**{option: 0})
