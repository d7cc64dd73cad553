"""The schedule arithmetic: next fire times for cron and intervals, DST gaps and overlaps in
Europe/Paris, and what catchup owes after downtime. Pure: no clock, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from orchestrator.schedule.arithmetic import Spec, due, local_instant

PARIS = ZoneInfo("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(instants: list[datetime], zone: ZoneInfo = PARIS) -> list[str]:
    return [t.astimezone(zone).isoformat() for t in instants]


def test_cron_next_times_follow_the_wall_clock_of_the_time_zone() -> None:
    spec = Spec(cron="0 6 * * 1-5", timezone="Europe/Paris")
    # Friday 2026-12-04 12:00 UTC: next Monday, Tuesday, Wednesday at 06:00 Paris (05:00 UTC in winter)
    assert spec.upcoming(utc(2026, 12, 4, 12), 3) == [utc(2026, 12, 7, 5), utc(2026, 12, 8, 5), utc(2026, 12, 9, 5)]
    assert spec.next_after(utc(2026, 12, 7, 5)) == utc(2026, 12, 8, 5)  # strictly after


def test_every_ticks_are_epoch_multiples_whoever_computes_them() -> None:
    spec = Spec(every_s=3)
    assert spec.upcoming(utc(2026, 1, 1, 0, 0, 1), 3) == [
        utc(2026, 1, 1, 0, 0, 3),
        utc(2026, 1, 1, 0, 0, 6),
        utc(2026, 1, 1, 0, 0, 9),
    ]
    assert spec.next_after(utc(2026, 1, 1, 0, 0, 3)) == utc(2026, 1, 1, 0, 0, 6)
    assert Spec(every_s=1.5).next_after(utc(2026, 1, 1, 0, 0, 0)) == utc(2026, 1, 1) + timedelta(seconds=1.5)


def test_a_tick_in_the_spring_gap_fires_once_at_the_first_valid_instant() -> None:
    # 2026-03-29 in Paris: 02:00-03:00 does not exist; 30 2 * * * fires at 03:00 CEST, once
    spec = Spec(cron="30 2 * * *", timezone="Europe/Paris")
    ticks = spec.upcoming(utc(2026, 3, 27, 12), 4)
    assert local(ticks) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert ticks[1] == utc(2026, 3, 29, 1, 0)
    # Several ticks in the gap are still one fire time
    every_quarter = Spec(cron="*/15 2 * * *", timezone="Europe/Paris")
    fires, _ = every_quarter.latest_between(utc(2026, 3, 28, 12), utc(2026, 3, 29, 12), 10)
    assert local(fires) == ["2026-03-29T03:00:00+02:00"]


def test_a_tick_in_the_autumn_overlap_fires_once_at_its_first_occurrence() -> None:
    # 2026-10-25 in Paris: 02:00-03:00 happens twice (CEST, then CET); 30 2 * * * fires once
    spec = Spec(cron="30 2 * * *", timezone="Europe/Paris")
    ticks = spec.upcoming(utc(2026, 10, 23, 12), 4)
    assert local(ticks) == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    assert ticks[1] == utc(2026, 10, 25, 0, 30)
    fires, _ = spec.latest_between(utc(2026, 10, 24, 12), utc(2026, 10, 25, 12), 10)
    assert fires == [utc(2026, 10, 25, 0, 30)]
    # Looking from inside the second 02:00-03:00 does not fire 02:30 again
    assert spec.next_after(utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 26, 1, 30)


def test_a_nonexistent_local_time_maps_to_the_transition() -> None:
    assert local_instant(datetime(2026, 3, 29, 2, 30), PARIS) == utc(2026, 3, 29, 1, 0)
    assert local_instant(datetime(2026, 10, 25, 2, 30), PARIS) == utc(2026, 10, 25, 0, 30)
    assert local_instant(datetime(2026, 7, 1, 12, 0), PARIS) == utc(2026, 7, 1, 10, 0)


def test_latest_between_counts_down_from_the_end_and_says_when_it_left_ticks_out() -> None:
    spec = Spec(cron="0 * * * *")
    fires, more = spec.latest_between(utc(2026, 1, 1, 0), utc(2026, 1, 1, 10), 3)
    assert fires == [utc(2026, 1, 1, 8), utc(2026, 1, 1, 9), utc(2026, 1, 1, 10)] and more
    fires, more = spec.latest_between(utc(2026, 1, 1, 0), utc(2026, 1, 1, 2), 3)
    assert fires == [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)] and not more  # (after, until]


LAST = utc(2026, 1, 1, 0, 0)  # the last tick dealt with, before beat went down
NOW = utc(2026, 1, 1, 10, 0, 20)  # beat is back: ticks at 01:00 ... 10:00 are due


@pytest.mark.parametrize(
    ("catchup", "fired"),
    [
        ("none", [utc(2026, 1, 1, 10)]),  # the latest tick is on time (20 s old): only it fires
        ("latest", [utc(2026, 1, 1, 10)]),
        ("all", [utc(2026, 1, 1, h) for h in range(1, 11)]),
    ],
)
def test_catchup_when_the_latest_tick_is_on_time(catchup: str, fired: list[datetime]) -> None:
    owed = due(Spec(cron="0 * * * *"), LAST, NOW, catchup, grace_s=60)
    assert list(owed.fire) == fired
    assert owed.latest == utc(2026, 1, 1, 10)
    assert owed.passed_over == (len(fired) < 10) and not owed.capped


def test_catchup_when_every_due_tick_was_missed() -> None:
    late = utc(2026, 1, 1, 10, 30)  # the 10:00 tick is 30 minutes old: missed too
    spec = Spec(cron="0 * * * *")
    assert due(spec, LAST, late, "none", grace_s=60).fire == ()
    assert due(spec, LAST, late, "none", grace_s=60).latest == utc(2026, 1, 1, 10)  # passed over, never owed again
    assert due(spec, LAST, late, "latest", grace_s=60).fire == (utc(2026, 1, 1, 10),)
    assert len(due(spec, LAST, late, "all", grace_s=60).fire) == 10


def test_catchup_all_is_capped_at_100_and_says_so() -> None:
    spec = Spec(every_s=60)
    owed = due(spec, LAST, LAST + timedelta(minutes=500), "all", grace_s=60)
    assert len(owed.fire) == 100 and owed.capped
    assert owed.fire[0] == LAST + timedelta(minutes=401) and owed.fire[-1] == LAST + timedelta(minutes=500)
    cron = due(Spec(cron="* * * * *"), LAST, LAST + timedelta(minutes=500), "all", grace_s=60)
    assert cron.fire == owed.fire and cron.capped
    exactly = due(spec, LAST, LAST + timedelta(minutes=100), "all", grace_s=60)
    assert len(exactly.fire) == 100 and not exactly.capped


def test_nothing_is_due_before_the_next_tick() -> None:
    assert due(Spec(every_s=10), utc(2026, 1, 1, 0, 0, 10), utc(2026, 1, 1, 0, 0, 19), "all", 60).latest is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": "0 6 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"every_s": 0.5}, "at least 1s"),
        ({"cron": "0 6 * * *", "every_s": 5}, "exactly one of cron or every"),
        ({}, "exactly one of cron or every"),
    ],
)
def test_a_bad_spec_is_refused_with_its_reason(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Spec(**kwargs)  # type: ignore[arg-type]
