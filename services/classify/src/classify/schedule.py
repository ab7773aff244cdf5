"""When the scheduled re-rank is due (REGSOSEK_RERANK_SCHEDULE). Pure functions.

A schedule is ``off``, a calendar period (``daily``, ``weekly``, ``monthly``, ``quarterly``,
``yearly``: once in each period, as soon as the service runs in it; periods start at
00:00 UTC, weeks on Monday, quarters in January, April, July and October) or an interval
(``every 90d``, ``every 12h``, ``every 30m``, ``every 45s``: when that long has passed
since the schedule last asked). A schedule that never asked yet is due at once.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

PERIODS = ("daily", "weekly", "monthly", "quarterly", "yearly")
_INTERVAL = re.compile(r"every\s+(\d+)\s*([smhd])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def check(schedule: str) -> str:
    """The schedule, normalised; ValueError when it is none of the forms above."""
    s = schedule.strip().lower()
    if s == "off" or s in PERIODS:
        return s
    m = _INTERVAL.fullmatch(s)
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"re-rank schedule {schedule!r}: off, one of {', '.join(PERIODS)}, or 'every <n>s|m|h|d'")
    return s


def period_start(period: str, now: datetime) -> datetime:
    """The start of the calendar period `now` falls in."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    if period == "quarterly":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    if period == "yearly":
        return day.replace(month=1, day=1)
    raise ValueError(f"unknown period {period!r}")


def due(schedule: str, last: datetime | None, now: datetime) -> bool:
    """Whether the schedule asks for a re-rank at `now`, having last asked at `last` (None: never)."""
    s = check(schedule)
    if s == "off":
        return False
    if last is None:
        return True
    if s in PERIODS:
        return last < period_start(s, now)
    return now - last >= interval(s)


def interval(schedule: str) -> timedelta:
    """The length of an interval schedule (``every 90d``)."""
    m = _INTERVAL.fullmatch(check(schedule))
    if m is None:
        raise ValueError(f"re-rank schedule {schedule!r} is not an interval")
    return timedelta(**{_UNIT[m.group(2)]: int(m.group(1))})
