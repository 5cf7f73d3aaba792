"""The pure helpers of bench/log_scale.py: the record mix its figures depend on, and its statistics."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.log_scale import NAMES, per_record, percentile, plan
from cogman import Status


def test_the_mix_has_the_documented_shares_and_every_name_status_pair():
    """docs/scaling.md states the mix; the name+status query needs every pair to occur."""
    rows = [plan(i) for i in range(100_000)]
    statuses = Counter(status for _, status, _ in rows)
    assert statuses == {Status.QUEUED: 1000, Status.IN_PROGRESS: 1000, Status.FAILED: 4000, Status.SUCCESS: 94_000}
    names = Counter(name for name, _, _ in rows)
    assert names == {name: weight * 1000 for name, weight in NAMES}
    assert {(name, status) for name, status, _ in rows} == {(n, s) for n, _ in NAMES for s in statuses}
    keys = [pk for _, _, pk in rows if pk is not None]
    assert len(keys) == 20_000 and len(set(keys)) == 20_000  # one in five; distinct up to 50,000 keys


def test_the_mix_is_the_same_on_every_run():
    assert [plan(i) for i in (0, 1, 5, 250_005)] == [
        ("resize_image", Status.QUEUED, "customer-0"),
        ("resize_image", Status.IN_PROGRESS, None),
        ("send_email", Status.FAILED, "customer-1"),
        ("send_email", Status.FAILED, "customer-1"),
    ]


def test_percentile_is_a_real_sample_by_nearest_rank():
    values = [float(v) for v in range(1, 201)]
    assert percentile(values, 50) == 100.0
    assert percentile(values, 99) == 198.0
    assert percentile(values, 100) == 200.0
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("q", [0, -1, 101])
def test_percentile_refuses_a_rank_outside_0_to_100(q):
    with pytest.raises(ValueError, match=f"q={q}"):
        percentile([1.0], q)


def test_percentile_refuses_no_values():
    with pytest.raises(ValueError, match="0 value"):
        percentile([], 50)


def test_per_record_is_the_delta_over_the_records():
    assert per_record(1000, 181_000, 100) == 1800.0
    with pytest.raises(ValueError, match="records must be positive, got 0"):
        per_record(0, 1, 0)
