"""The handlers on the in-memory store with the real unit of work (no database, no broker):
load, decide, save; erasure removes the family; the console publishes nothing."""

from __future__ import annotations

import dataclasses
import uuid

from console_events import FAMILY, SLS, SUBMITTED, at, classified, eligibility, flagged, resolution, verified
from console_fakes import InMemoryConsoleStore

from console.domain import VerifyState
from console.handlers import ConsoleHandlers
from regsosek.contracts import Contract, FamilyErased
from regsosek.envelope import new_envelope
from regsosek.messaging import Incoming
from regsosek.testing import FakeUnitOfWork


def incoming(e: Contract) -> Incoming:
    """The event as the consumer hands it over; intake's receipt time (the envelope's) at T0."""
    envelope = dataclasses.replace(new_envelope(e, source="/test", subject=FAMILY), time=at(0).isoformat())
    return Incoming(envelope=envelope, data=e, record=None)


async def feed(handlers: ConsoleHandlers, *events: Contract) -> FakeUnitOfWork:
    uow = FakeUnitOfWork("console")
    table = handlers.table()
    for e in events:
        await table[type(e)](uow, incoming(e))
    await uow.commit()
    return uow


async def test_a_family_flagged_resolved_and_verified_out_of_order():
    store = InMemoryConsoleStore()
    handlers = ConsoleHandlers(store_for=lambda uow: store)
    uow = await feed(handlers, verified(seq=2, minutes=5, outcome="verified_by_supervisor"), flagged(seq=1, minutes=1),
                     resolution(minutes=3), SUBMITTED, classified(seq=1, minutes=2), eligibility(seq=1, minutes=4))
    state = await store.family(FAMILY)
    assert state.verify_state is VerifyState.VERIFIED and state.verify_outcome == "verified_by_supervisor"
    assert state.resolution == "verify" and state.rule_version == "rules-1" and state.welfare_group == 2
    family, steps = await store.family_by_id(str(SUBMITTED.submission_id), scope=None)
    assert family == state
    assert [s.step for s in steps] == ["received", "flagged", "classified", "resolution", "eligibility", "verified"]
    assert {r["kind"]: r["version"] for r in await store.versions()} == {"model": "pmt-1", "rules": "rules-1",
                                                                      "decile_basis": "reference-2022"}
    assert uow.published == []


async def test_scope_hides_a_family_outside_the_readers_areas():
    store = InMemoryConsoleStore()
    await feed(ConsoleHandlers(store_for=lambda uow: store), SUBMITTED, flagged(seq=1))
    assert [f.family_id for f in await store.worklist(scope=(SLS[:10],))] == [FAMILY]
    assert await store.worklist(scope=("6471",)) == []
    assert (await store.family_by_id(FAMILY, scope=("6471",)))[0] is None


async def test_erasure_removes_the_family_and_its_journey():
    store = InMemoryConsoleStore()
    handlers = ConsoleHandlers(store_for=lambda uow: store)
    await feed(handlers, SUBMITTED, verified(seq=1))
    await feed(handlers, FamilyErased(erasure_id=uuid.uuid4(), family_id=FAMILY, sls_id=SLS,
                                      reason="data_subject_request", erased_at=at(9)))
    assert await store.family(FAMILY) is None and store.steps == {}
    (entry,) = store.audit
    assert (entry.action, entry.object_id, entry.detail["families"], entry.detail["journey_steps"]) == \
        ("family.erase", FAMILY, 1, 2)
    progress = await store.progress(SLS[:4], None, 7)
    assert progress == []
