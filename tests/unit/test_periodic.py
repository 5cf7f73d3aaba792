"""Periodic schedules and the beat, on the embedded transport with a clock the test moves: ticks of cron
expressions in time zones (DST included) and of intervals, each tick sent once by any number of beats,
no burst after downtime (at most ``catch_up`` late ticks), and the registration's checks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cogman import App, Status
from cogman.backends.base import TaskQuery
from cogman.scheduling.beat import Beat
from cogman.scheduling.periodic import Schedule, last_tick, zone


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


class Clock:
    def __init__(self, start: str) -> None:
        self.now = at(start)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def app() -> Iterator[App]:
    application = App("periodic", broker="memory://", backend="memory://")

    @application.task(name="p.ping")
    def ping(label: str = "") -> str:
        return label

    yield application
    application.close()


def ticks_sent(app: App, schedule: str) -> list[str]:
    page = app.backend.query(TaskQuery(primary_key=f"periodic:{schedule}", limit=1000))
    return sorted(record.payload["periodic"]["tick"] for record in page.records)


# Schedules


def test_cron_ticks_are_in_the_schedules_time_zone_across_dst():
    paris = Schedule("morning", "p.ping", cron="0 9 * * *", tz=zone("Europe/Paris"))
    assert paris.next_after(at("2026-01-05T12:00:00+00:00")) == at("2026-01-06T08:00:00+00:00")  # CET, UTC+1
    assert paris.next_after(at("2026-07-05T12:00:00+00:00")) == at("2026-07-06T07:00:00+00:00")  # CEST, UTC+2
    utc = Schedule("morning-utc", "p.ping", cron="0 9 * * *")
    assert utc.next_after(at("2026-01-05T12:00:00+00:00")) == at("2026-01-06T09:00:00+00:00")
    # 02:30 does not exist in New York on 2026-03-08 (clocks jump 02:00 -> 03:00): cron runs it at 03:00.
    new_york = Schedule("gap", "p.ping", cron="30 2 * * *", tz=zone("America/New_York"))
    assert new_york.next_after(at("2026-03-08T05:00:00+00:00")) == at("2026-03-08T07:00:00+00:00")


def test_ticks_between_two_moments_newest_first():
    every = Schedule("fast", "p.ping", every=timedelta(seconds=10))
    assert every.ticks(at("2026-01-01T00:00:35+00:00"), at("2026-01-01T00:00:05+00:00"), 10) == [
        at("2026-01-01T00:00:30+00:00"),
        at("2026-01-01T00:00:20+00:00"),
        at("2026-01-01T00:00:10+00:00"),
    ]
    assert every.ticks(at("2026-01-01T00:00:30+00:00"), at("2026-01-01T00:00:00+00:00"), 2) == [
        at("2026-01-01T00:00:30+00:00"),  # a tick exactly at "now" is due
        at("2026-01-01T00:00:20+00:00"),
    ]
    cron = Schedule("quarter", "p.ping", cron="*/15 * * * *")
    assert cron.ticks(at("2026-01-01T01:00:00.5+00:00"), at("2026-01-01T00:20:00+00:00"), 5) == [
        at("2026-01-01T01:00:00+00:00"),
        at("2026-01-01T00:45:00+00:00"),
        at("2026-01-01T00:30:00+00:00"),
    ]


def test_a_tick_id_depends_on_the_schedule_and_the_tick_only():
    one = Schedule("a", "p.ping", every=timedelta(minutes=1))
    tick = at("2026-01-01T00:01:00+00:00")
    assert one.tick_id(tick) == Schedule("a", "p.ping", every=timedelta(minutes=1)).tick_id(
        tick.astimezone(zone("Asia/Tokyo"))
    )
    assert one.tick_id(tick) != Schedule("b", "p.ping", every=timedelta(minutes=1)).tick_id(tick)
    assert one.tick_id(tick) != one.tick_id(tick + timedelta(minutes=1))


def test_registration_checks_everything_at_once(app: App):
    with pytest.raises(ValueError, match="exactly one of cron"):
        app.add_periodic("p.ping")
    with pytest.raises(ValueError, match="bad cron expression '61 \\* \\* \\* \\*'"):
        app.add_periodic("p.ping", cron="61 * * * *")
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        app.add_periodic("p.ping", cron="* * * * *", tz="Mars/Olympus")
    with pytest.raises(ValueError, match="every must be a timedelta of at least 1 s"):
        app.add_periodic("p.ping", every=timedelta(milliseconds=10))
    with pytest.raises(ValueError, match="tz applies to cron schedules"):
        app.add_periodic("p.ping", every=timedelta(seconds=5), tz="Europe/Paris")
    with pytest.raises(TypeError, match=r"arguments do not fit p\.ping"):
        app.add_periodic("p.ping", cron="* * * * *", args=(1, 2))
    app.add_periodic("p.ping", cron="* * * * *")
    with pytest.raises(ValueError, match=r"named 'p\.ping' exists already; give this one name="):
        app.add_periodic("p.ping", every=timedelta(seconds=5))
    app.add_periodic("p.ping", every=timedelta(seconds=5), name="ping-often", args=("often",))
    assert sorted(app.schedules) == ["p.ping", "ping-often"]


def test_the_decorator_registers_the_task_and_the_schedule(app: App):
    @app.periodic("*/5 * * * *", tz="Europe/Paris", args=(2,))
    def report(n: int) -> int:
        return n

    (schedule,) = [s for s in app.schedules.values() if s.task == report.name]
    assert report.name in app.tasks and schedule.cron == "*/5 * * * *" and str(schedule.tz) == "Europe/Paris"


# The beat


def test_three_beats_send_each_tick_once(app: App):
    app.add_periodic("p.ping", every=timedelta(seconds=1), name="second")
    clock = Clock("2026-01-01T00:00:00.25+00:00")
    beats = [Beat(app, clock=clock) for _ in range(3)]
    app.send_task("p.ping")  # nothing of the schedule ran yet: the first passes send nothing
    assert [b.run_pending() for b in beats] == [[], [], []]
    sent: list[str] = []
    for _ in range(5):
        clock.advance(1)
        for beat in beats:
            sent += beat.run_pending()
    assert len(sent) == len(set(sent)) == 5
    assert ticks_sent(app, "second") == [f"2026-01-01T00:00:0{s}+00:00" for s in range(1, 6)]


def test_no_burst_after_downtime_only_the_configured_catch_up(app: App):
    app.add_periodic("p.ping", every=timedelta(seconds=1), name="second")
    clock = Clock("2026-01-01T00:00:00.5+00:00")
    first = Beat(app, clock=clock)
    first.run_pending()
    clock.advance(1)
    assert len(first.run_pending()) == 1  # 00:00:01
    clock.advance(60)  # every beat down for a minute
    assert len(Beat(app, clock=clock).run_pending()) == 1  # default catch_up=1: 00:01:01 only
    assert ticks_sent(app, "second")[-1] == "2026-01-01T00:01:01+00:00"
    clock.advance(60)
    app.schedules["second"] = Schedule("second", "p.ping", every=timedelta(seconds=1), catch_up=3)
    assert len(Beat(app, clock=clock).run_pending()) == 3
    clock.advance(60)
    app.schedules["second"] = Schedule("second", "p.ping", every=timedelta(seconds=1), catch_up=0)
    assert Beat(app, clock=clock).run_pending() == []
    assert len(ticks_sent(app, "second")) == 5


def test_a_stalled_beat_sends_the_current_tick_and_catch_up_more(app: App):
    app.add_periodic("p.ping", every=timedelta(seconds=1), name="second", catch_up=2)
    clock = Clock("2026-01-01T00:00:00.5+00:00")
    beat = Beat(app, clock=clock)
    beat.run_pending()
    clock.advance(30)  # the process was frozen for 30 s
    assert len(beat.run_pending()) == 3


def test_the_last_run_is_read_from_the_backend(app: App):
    schedule = app.add_periodic("p.ping", cron="0 * * * *", name="hourly")
    assert last_tick(app.backend, schedule) is None
    clock = Clock("2026-01-01T09:59:59+00:00")
    beat = Beat(app, clock=clock)
    beat.run_pending()
    clock.advance(2)
    (sent,) = beat.run_pending()
    assert last_tick(app.backend, schedule) == (at("2026-01-01T10:00:00+00:00"), Status.QUEUED.value)
    assert app.backend.get(sent).primary_key == "periodic:hourly"  # type: ignore[union-attr]


def test_the_beat_sleeps_until_the_next_tick_and_stops_at_once(app: App):
    app.add_periodic("p.ping", cron="0 * * * *", name="hourly")
    clock = Clock("2026-01-01T09:59:58+00:00")
    assert Beat(app, clock=clock).seconds_to_next() == 2.0
    beat = Beat(app).start()
    beat.stop(timeout=5)
    assert beat._thread is not None and not beat._thread.is_alive()


def test_a_failing_pass_is_logged_and_the_loop_lives_on(
    app: App, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    app.add_periodic("p.ping", every=timedelta(seconds=1), name="second")
    passes: list[int] = []
    beat = Beat(app)

    def broken() -> list[str]:
        passes.append(1)
        if len(passes) >= 2:
            beat._stop.set()
        raise KeyboardInterrupt("a pass that throws anything")

    beat.run_pending = broken  # type: ignore[method-assign]
    monkeypatch.setattr("cogman.scheduling.beat.ERROR_PAUSE", 0.01)
    beat.run()
    assert len(passes) == 2 and "beat pass failed" in caplog.text
