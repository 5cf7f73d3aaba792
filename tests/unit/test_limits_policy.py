"""What a task may declare as a limit (cogman/limits/policy.py): the rate syntax, the option checks, and
the scope one call's arguments give; every mistake is named when the task is declared."""

from __future__ import annotations

import pytest

from cogman import App, Config
from cogman.errors import ConfigError, PoisonMessage
from cogman.limits.policy import Rate, TaskLimits, parse_rate, rate_wait


@pytest.mark.parametrize(
    ("text", "rate"),
    [("100/m", Rate(100, 60.0)), ("1/s", Rate(1, 1.0)), (" 7 / h ", Rate(7, 3600.0)), ("25/s", Rate(25, 1.0))],
)
def test_a_rate_is_n_per_second_minute_or_hour(text: str, rate: Rate):
    assert parse_rate("t", text) == rate
    assert str(rate) in ("100/m", "1/s", "7/h", "25/s")


@pytest.mark.parametrize("text", ["0/m", "100", "100/d", "100/min", "1.5/s", "-1/s", "m/100", "", 100, None, "10/ s x"])
def test_anything_else_is_refused_naming_the_task_and_the_value(text: object):
    with pytest.raises(ValueError, match=r"task 'reports': rate_limit must look like '100/m'.*got"):
        parse_rate("reports", text)


def test_the_decorator_checks_the_options_when_the_task_is_declared():
    app = App("limits-decl", broker="memory://", backend="memory://")
    with pytest.raises(ValueError, match="rate_limit must look like"):
        app.task(name="a", rate_limit="fast")(lambda: None)
    with pytest.raises(ValueError, match="rate_limit_key needs a rate_limit"):
        app.task(name="b", rate_limit_key=lambda: 1)(lambda: None)
    with pytest.raises(ValueError, match="concurrency_key needs a max_concurrency"):
        app.task(name="c", concurrency_key=lambda: 1)(lambda: None)
    for most in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"max_concurrency must be a whole number >= 1"):
            app.task(name="d", max_concurrency=most)(lambda: None)
    with pytest.raises(TypeError, match="concurrency_key must be a callable"):
        app.task(name="e", max_concurrency=1, concurrency_key="customer_id")(lambda: None)
    with pytest.raises(TypeError, match=r"task 'f': unknown option\(s\) 'rate'"):
        app.task(name="f", rate="1/s")(lambda: None)
    with pytest.raises(ValueError, match="need wire='cogman'"):
        app.task(name="g", wire="go", rate_limit="1/s")(lambda payload: None)
    assert app.task(name="h")(lambda: None).limits is None
    assert app.tasks.keys() == {"h"}


def test_a_call_is_limited_per_task_name_or_per_key():
    by_customer = lambda customer, **kw: customer  # noqa: E731
    limits = TaskLimits.build("bill", rate_limit="10/s", max_concurrency=2, concurrency_key=by_customer)
    assert limits is not None
    scopes = limits.scopes("id-1", ("acme",), {"amount": 3})
    assert (scopes.rate, scopes.concurrency) == ("bill", "bill:acme")
    keyed = TaskLimits.build("mail", rate_limit="1/m", rate_limit_key=lambda to: to.split("@")[1])
    assert keyed is not None and keyed.scopes("id-2", (), {"to": "a@example.com"}).rate == "mail:example.com"
    assert keyed.scopes("id-2", (), {"to": "a@example.com"}).concurrency is None


def test_a_key_function_that_cannot_place_the_arguments_makes_the_message_poison():
    limits = TaskLimits.build("bill", max_concurrency=1, concurrency_key=lambda customer: customer["id"])
    assert limits is not None
    with pytest.raises(PoisonMessage, match=r"concurrency_key of task bill raised TypeError") as raised:
        limits.scopes("id-3", ("acme",), {})
    assert raised.value.task_id == "id-3"
    listed = TaskLimits.build("bill", max_concurrency=1, concurrency_key=lambda customer: [customer])
    assert listed is not None
    with pytest.raises(PoisonMessage, match=r"must return a string or an integer, got \['acme'\]"):
        listed.scopes("id-4", ("acme",), {})


def test_the_sliding_log_waits_for_the_oldest_start_that_blocks_the_window():
    rate = Rate(3, 10.0)
    assert rate_wait([], 100.0, rate) == 0
    assert rate_wait([91.0, 95.0], 100.0, rate) == 0
    assert rate_wait([91.0, 95.0, 99.0], 100.0, rate) == pytest.approx(1.0)
    assert rate_wait([90.5, 91.0, 95.0, 99.0], 100.0, rate) == pytest.approx(1.0)  # the newest three decide


@pytest.mark.parametrize("lease", [0, -1.0, 3601])
def test_the_concurrency_lease_must_be_a_sane_number_of_seconds(lease: float):
    with pytest.raises(ConfigError, match=r"concurrency_lease must be > 0 and <= 3600 seconds, got"):
        Config(concurrency_lease=lease)
    assert Config().concurrency_lease == 60.0
