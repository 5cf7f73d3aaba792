"""bench/stages.py: the methods it stamps still exist with the arguments it reads, and its arithmetic."""

from __future__ import annotations

import inspect

import pytest

from bench.stages import STAGES, Stamps, _wrap, stage_offsets, table, targets

#: What each stamp reads from its method's arguments: the second parameter's name.
READS = {"published": "entry", "read": "delivery", "picked_up": "delivery", "started": "task_id"}


@pytest.mark.parametrize("stage", sorted(READS))
def test_every_stamped_method_exists_and_takes_what_the_stamp_reads(stage):
    cls, method = targets()[stage]
    parameters = list(inspect.signature(getattr(cls, method)).parameters)
    assert parameters[:2] == ["self", READS[stage]]


def test_a_stamp_is_taken_before_or_after_the_call_as_asked():
    order: list[str] = []

    class Thing:
        def first(self, value):
            order.append(f"first {value}")

        def second(self, value):
            order.append(f"second {value}")

    _wrap(Thing, "first", lambda args: order.append(f"stamp {args[1]}"), before=True)
    _wrap(Thing, "second", lambda args: order.append(f"stamp {args[1]}"), before=False)
    Thing().first(1)
    Thing().second(2)
    assert order == ["stamp 1", "first 1", "second 2", "stamp 2"]


def test_offsets_are_milliseconds_since_each_tasks_send_and_keep_the_first_stamp():
    stamps = Stamps()
    rows = [("read", "a", 10.002), ("read", "b", 20.004), ("started", "a", 10.003), ("started", "a", 10.009)]
    rows += [("read", "warm-up", 5.0)]
    stamps.rows += rows
    offsets = stage_offsets({"a": 10.0, "b": 20.0}, stamps.rows, body_seconds=[0.0035])
    assert offsets["read"] == pytest.approx([2.0, 4.0])
    assert offsets["started"] == pytest.approx([3.0])
    assert offsets["body"] == pytest.approx([3.5])
    assert offsets["published"] == []


def test_the_table_shows_each_stages_step_from_the_one_before():
    offsets = {"published": [0.3, 0.3, 0.5], "read": [0.7, 0.7, 0.9], "body": [1.2, 1.2, 1.4]}
    text = table(offsets, reference=[0.4, 0.4, 0.6])
    assert "| read | 0.700 ms | 0.860 ms | +0.400 ms | 3 |" in text
    assert "| picked_up | - | - | - | 0 |" in text
    assert "| body | 1.200 ms | 1.360 ms | +0.500 ms | 3 |" in text
    assert "| raw kombu, send->start (reference) | 0.400 ms |" in text
    assert [line.split(" | ")[0].lstrip("| ") for line in text.splitlines()[2:7]] == list(STAGES)
