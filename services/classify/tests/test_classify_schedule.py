"""When the scheduled re-rank is due (classify.schedule): calendar periods and intervals."""

from datetime import UTC, datetime, timedelta

import pytest

from classify.schedule import check, due, period_start

NOW = datetime(2026, 5, 14, 9, 30, tzinfo=UTC)  # a Thursday in the second quarter


def test_off_is_never_due():
    assert not due("off", None, NOW)


def test_a_schedule_that_never_asked_is_due_at_once():
    assert due("quarterly", None, NOW) and due("every 90d", None, NOW)


@pytest.mark.parametrize(("period", "start"), [
    ("daily", datetime(2026, 5, 14, tzinfo=UTC)), ("weekly", datetime(2026, 5, 11, tzinfo=UTC)),
    ("monthly", datetime(2026, 5, 1, tzinfo=UTC)), ("quarterly", datetime(2026, 4, 1, tzinfo=UTC)),
    ("yearly", datetime(2026, 1, 1, tzinfo=UTC))])
def test_a_calendar_period_asks_once_in_each_period(period, start):
    assert period_start(period, NOW) == start
    assert due(period, start - timedelta(seconds=1), NOW)  # last asked in the period before
    assert not due(period, start, NOW)  # already asked in this one


def test_quarters_start_in_january_april_july_october():
    starts = {period_start("quarterly", datetime(2026, m, 20, tzinfo=UTC)).month for m in range(1, 13)}
    assert starts == {1, 4, 7, 10}


def test_an_interval_asks_when_that_long_has_passed():
    assert not due("every 90d", NOW - timedelta(days=89), NOW)
    assert due("every 90d", NOW - timedelta(days=90), NOW)
    assert due("every 30m", NOW - timedelta(minutes=31), NOW)
    assert not due("every 12h", NOW - timedelta(hours=11), NOW)


@pytest.mark.parametrize("bad", ["sometimes", "every d", "every 0d", "every 5w", ""])
def test_other_schedules_are_refused(bad):
    with pytest.raises(ValueError):
        check(bad)


def test_schedules_are_normalised():
    assert check(" Quarterly ") == "quarterly" and check("EVERY 7d") == "every 7d"
