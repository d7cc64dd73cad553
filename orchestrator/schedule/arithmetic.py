"""Schedule arithmetic: when a cron or interval schedule fires, in which time zone, and what a
beat that was down for a while still owes. Pure: no Celery, no SQLAlchemy, no clock of its own.

Cron expressions are matched on the wall clock of the schedule's time zone (croniter on naive
local times), then each local time becomes one instant (zoneinfo):

- a local time that does not exist (a DST gap, e.g. 02:30 in Paris on 2026-03-29) fires once, at
  the first valid instant after the gap (03:00 local, the transition itself);
- a local time that happens twice (a DST overlap, e.g. 02:30 in Paris on 2026-10-25) fires once,
  at its first occurrence (the summer-time one, ``fold=0``).

Intervals (``every``) ignore wall clocks: their ticks are the multiples of the interval since the
Unix epoch in UTC, so every beat process computes the same fire times with no shared state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

MIN_EVERY_S = 1.0
DEFAULT_CATCHUP_CAP = 100
CATCHUPS = ("none", "latest", "all")
OVERLAPS = ("skip", "buffer_one", "allow", "cancel_other")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEAR = timedelta(hours=26)  # no zone moves its clock twice within a day
_MARGIN = timedelta(hours=3)  # more than any DST shift: where a moved wall clock can land


def time_zone(name: str) -> ZoneInfo:
    """The zone named ``name`` (IANA, e.g. Europe/Paris); ValueError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone '{name}': use an IANA name such as UTC or Europe/Paris") from None


def check_cron(expression: str) -> None:
    """ValueError saying what is wrong with a cron expression."""
    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)  # a date that never comes fails here
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise ValueError(f"invalid cron expression '{expression}': {reason}") from None


@dataclass(frozen=True)
class Spec:
    """When a schedule fires: a cron expression in a time zone, or an interval in seconds."""

    cron: str | None = None
    every_s: float | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("a schedule has exactly one of cron or every")
        if self.every_s is not None and self.every_s < MIN_EVERY_S:
            raise ValueError(f"every must be at least {MIN_EVERY_S:g}s")
        if self.cron is not None:
            check_cron(self.cron)
        time_zone(self.timezone)

    @property
    def text(self) -> str:
        """How the spec reads in a listing: ``cron 0 6 * * 1-5`` or ``every 30s``."""
        return f"cron {self.cron}" if self.cron is not None else f"every {self.every_s:g}s"

    @property
    def zone(self) -> ZoneInfo:
        return time_zone(self.timezone)

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (an aware datetime)."""
        after = after.astimezone(UTC)
        if self.every_s is not None:
            step = _micros(self.every_s)
            return _from_micros((_micros_since_epoch(after) // step + 1) * step)
        zone = self.zone
        it = croniter(self.cron, _wall(after, zone) - _margin(after, zone))
        while True:
            found = local_instant(it.get_next(datetime), zone)
            if found > after:
                return found

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times after ``after``."""
        found: list[datetime] = []
        for _ in range(count):
            after = self.next_after(after)
            found.append(after)
        return found

    def latest_between(self, after: datetime, until: datetime, limit: int) -> tuple[list[datetime], bool]:
        """The latest ``limit`` fire times in (``after``, ``until``], oldest first, and whether
        older ones in that span were left out."""
        after, until = after.astimezone(UTC), until.astimezone(UTC)
        if until <= after:
            return [], False
        if self.every_s is not None:
            step = _micros(self.every_s)
            first = _micros_since_epoch(after) // step + 1
            last = _micros_since_epoch(until) // step
            start = max(first, last - limit + 1)
            return [_from_micros(k * step) for k in range(start, last + 1)], start > first
        zone = self.zone
        it = croniter(self.cron, _wall(until, zone) + _margin(until, zone) + timedelta(seconds=1))
        found: list[datetime] = []
        while True:
            at = local_instant(it.get_prev(datetime), zone)
            if at <= after:
                return list(reversed(found)), False
            if at <= until and (not found or found[-1] != at):
                if len(found) == limit:
                    return list(reversed(found)), True
                found.append(at)


def local_instant(wall: datetime, zone: tzinfo) -> datetime:
    """The instant (UTC) a naive local time of ``zone`` stands for: its first occurrence when it
    happens twice, the end of the gap (the first valid instant) when it does not exist."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(first, other), max(first, other)
    after_gap = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):  # the transition: the first instant on the new offset
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == after_gap:
            high = middle
        else:
            low = middle
    return low.replace(microsecond=0) + timedelta(seconds=1)  # transitions fall on whole seconds


@dataclass(frozen=True)
class Due:
    """What one look at a schedule decides: the ticks to fire now (oldest first), whether it
    passes over due ticks, whether more than the cap were missed, and the latest due tick."""

    fire: tuple[datetime, ...] = ()
    passed_over: bool = False
    capped: bool = False
    latest: datetime | None = None


def due(
    spec: Spec,
    after: datetime,
    now: datetime,
    catchup: str,
    grace_s: float,
    cap: int = DEFAULT_CATCHUP_CAP,
) -> Due:
    """The ticks in (``after``, ``now``] to fire: the latest one when it is on time (at most
    ``grace_s`` old); the ones missed before it as ``catchup`` says: ``none`` fires none of them,
    ``latest`` one run for all of them (the latest tick), ``all`` each, at most ``cap``."""
    ticks, more = spec.latest_between(after, now, cap + 1 if catchup == "all" else 2)
    if not ticks:
        return Due()
    latest = ticks[-1]
    on_time = (now - latest).total_seconds() <= grace_s
    if catchup == "all":
        fire = ticks[-cap:]
        capped = more or len(ticks) > cap
    elif catchup == "latest" or on_time:
        fire, capped = [latest], False
    else:
        fire, capped = [], False
    return Due(tuple(fire), len(ticks) > len(fire), capped, latest)


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _margin(instant: datetime, zone: tzinfo) -> timedelta:
    """How far around ``instant`` a moved wall clock may put a tick: none away from transitions."""
    if (instant - _NEAR).astimezone(zone).utcoffset() == (instant + _NEAR).astimezone(zone).utcoffset():
        return timedelta(0)
    return _MARGIN


def _micros(seconds: float) -> int:
    return max(1, round(seconds * 1_000_000))


def _micros_since_epoch(instant: datetime) -> int:
    delta = instant - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)
