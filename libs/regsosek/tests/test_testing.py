"""The fake unit of work used by the services' fast handler tests behaves as the real one does
before its commit: events stay in the outbox, readable; deferred work runs once per key on commit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from regsosek.contracts import ErasureReason, FamilyErased
from regsosek.testing import FakeUnitOfWork
from regsosek.topics import Topic

SLS = "64720100010001"


def erased() -> FamilyErased:
    return FamilyErased(erasure_id=str(uuid.uuid4()), family_id=f"{SLS}-0001-001", sls_id=SLS,
                        reason=ErasureReason.COURT_ORDER, erased_at=datetime.now(UTC))


async def test_published_events_are_read_back_decoded() -> None:
    uow = FakeUnitOfWork("verify")
    e = erased()
    uow.outbox.publish(Topic.FAMILY_ERASED, e.family_id, e, subject=e.family_id)
    [p] = uow.published
    assert p.topic == Topic.FAMILY_ERASED.wire and p.key == e.family_id and p.subject == e.family_id
    assert p.event == e
    assert uow.events(FamilyErased) == [e]
    assert uow.outbox.source == "/regsosek/verify"


async def test_deferred_work_runs_once_per_key_on_commit() -> None:
    uow = FakeUnitOfWork()
    ran: list[str] = []

    async def recount() -> None:
        ran.append("recount")

    uow.defer(("recount", SLS), recount)
    uow.defer(("recount", SLS), recount)
    assert ran == []
    await uow.commit()
    assert ran == ["recount"] and uow.committed == 1
