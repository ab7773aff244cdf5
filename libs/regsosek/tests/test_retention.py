"""Retention: the cut-off rule, the shared rules every service gets, and the settings rule
that an inbox outlives every record its service may read again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from regsosek.retention import Rule, _count, cutoff, prune_inbox, prune_once, shared_rules
from regsosek.settings import ServiceSettings
from regsosek.topics import redelivery_window_ms

NOW = datetime(2022, 12, 1, 12, 0, tzinfo=UTC)


def test_cutoff_is_days_before_now():
    assert cutoff(NOW, 45) == datetime(2022, 10, 17, 12, 0, tzinfo=UTC)
    assert cutoff(NOW, 0.5) == NOW - timedelta(hours=12)


@pytest.mark.parametrize("days", [0, -1, float("nan")])
def test_cutoff_refuses_a_retention_that_is_not_positive(days):
    with pytest.raises(ValueError):
        cutoff(NOW, days)


def test_cutoff_refuses_a_naive_now():
    with pytest.raises(ValueError):
        cutoff(datetime(2022, 12, 1), 1)


def test_every_service_gets_the_shared_rules_with_its_settings():
    s = ServiceSettings(service_name="intake", inbox_retention_days=60, outbox_rejected_retention_days=10,
                        audit_retention_days=400)
    rules = {r.name: r for r in shared_rules(s)}
    assert set(rules) == {"inbox", "outbox_rejected", "audit_log"}
    assert (rules["inbox"].days, rules["outbox_rejected"].days, rules["audit_log"].days) == (60, 10, 400)
    assert rules["inbox"].prune is prune_inbox


def test_command_status_count():
    assert _count("DELETE 12") == 12
    assert _count("UPDATE 0") == 0


@pytest.mark.parametrize("service", ["intake", "verify", "classify", "notify"])
@pytest.mark.parametrize("env", ["local", "production"])
def test_default_inbox_retention_outlives_every_consumed_topic(service, env):
    s = ServiceSettings(service_name=service, env=env)
    window = redelivery_window_ms(service, env)
    assert window is not None and 0 < window < s.inbox_retention_days * 86_400_000


@pytest.mark.parametrize("service", ["intake", "verify", "classify", "notify"])
def test_an_inbox_shorter_than_redelivery_is_refused(service):
    window_days = redelivery_window_ms(service, "production") / 86_400_000
    with pytest.raises(ValidationError, match="REGSOSEK_INBOX_RETENTION_DAYS"):
        ServiceSettings(service_name=service, env="production", inbox_retention_days=int(window_days))
    ServiceSettings(service_name=service, env="production", inbox_retention_days=int(window_days) + 1)


def test_a_service_that_consumes_nothing_has_no_inbox_bound():
    ServiceSettings(service_name="no-consumer", env="production", inbox_retention_days=1)


class _FakePool:
    """Enough of asyncpg.Pool for prune_once: a clock and a connection per statement."""

    def __init__(self):
        self.now = NOW

    def acquire(self):
        pool = self

        class _Ctx:
            async def __aenter__(self):
                return pool

            async def __aexit__(self, *exc):
                return False

        return _Ctx()

    async def fetchval(self, sql):
        assert sql == "select now()"
        return self.now


async def test_prune_once_repeats_bounded_statements_until_one_finds_fewer():
    remaining = {"old": 2500}
    seen = []

    async def prune(conn, before, limit):
        seen.append((before, limit))
        n = min(limit, remaining["old"])
        remaining["old"] -= n
        return n

    done = await prune_once(_FakePool(), [Rule("things", 10, prune)], 1000)
    assert done == {"things": 2500}
    assert [limit for _, limit in seen] == [1000, 1000, 1000]  # 1000, 1000, 500 (< 1000: stop)
    assert {before for before, _ in seen} == {NOW - timedelta(days=10)}
