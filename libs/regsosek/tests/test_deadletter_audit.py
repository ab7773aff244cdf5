"""The dead-letter command's audit: required in production, entries of ids only, written before the action."""

from __future__ import annotations

import contextlib

import pytest

from regsosek import audit
from regsosek.deadletters import EXIT_USAGE, Auditor, CommandError
from regsosek.settings import ServiceSettings


class RecordingConn:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    async def execute(self, sql: str, *args) -> None:
        assert sql.startswith("insert into audit_log")
        self.rows.append(args)

    @contextlib.asynccontextmanager
    async def transaction(self):
        yield


def settings(**kw) -> ServiceSettings:
    return ServiceSettings(service_name="deadletters", **kw)


def test_production_refuses_show_and_redrive_without_an_actor_and_an_audit_database() -> None:
    for actor, url in ((None, "postgresql://db/verify"), ("ops-1", ""), (None, "")):
        with pytest.raises(CommandError) as e:
            Auditor(settings(env="production", database_url=url), actor)
        assert e.value.code == EXIT_USAGE and "audited" in str(e.value)
    assert Auditor(settings(env="production", database_url="postgresql://db/verify"), "ops-1").enabled


def test_local_use_without_an_audit_database_is_allowed_but_not_audited() -> None:
    assert not Auditor(settings(), "ops-1").enabled
    assert not Auditor(settings(database_url="postgresql://db/verify"), None).enabled


async def test_entries_name_the_actor_and_the_address_only() -> None:
    a = Auditor(settings(database_url="postgresql://db/verify"), "ops-1")
    a.conn = RecordingConn()
    await a.record("deadletter.redrive", ["3:17", "4:2"])
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in a.conn.rows] == [
        ("ops-1", "operator", "deadletter.redrive", "dead_letter", "3:17"),
        ("ops-1", "operator", "deadletter.redrive", "dead_letter", "4:2")]
    with pytest.raises(audit.NotAuditable):  # a NIK-shaped id never reaches the log
        await a.record("deadletter.show", ["6472010101900001"])
