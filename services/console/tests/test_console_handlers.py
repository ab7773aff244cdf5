"""The handlers on the in-memory store with the real unit of work (no database, no broker):
load, decide, save; erasure removes the family; the console publishes nothing."""

from __future__ import annotations

import dataclasses
import random
import uuid

from console import domain
from console.domain import VerifyState
from console.handlers import ConsoleHandlers
from regsosek.contracts import Contract, FamilyErased
from regsosek.envelope import new_envelope
from regsosek.messaging import Incoming
from regsosek.testing import FakeUnitOfWork

from console_events import FAMILY, SLS, SUBMITTED, at, classified, eligibility, flagged, resolution, verified
from console_fakes import InMemoryConsoleStore


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


def _recount(store: InMemoryConsoleStore) -> tuple[dict, dict]:
    """The per-SLS counters and interviews per day as counted afresh from the families."""
    counters: dict[str, dict[str, int]] = {}
    days: dict = {}
    for f in store.families.values():
        c = domain.counts_of(f)
        row = counters.setdefault(f.sls_id, {"interviewed": 0, "verified": 0, "flagged": 0})
        row["interviewed"] += c.interviewed
        row["verified"] += c.verified
        row["flagged"] += c.flagged
        if c.day is not None:
            days[(f.sls_id, c.day)] = days.get((f.sls_id, c.day), 0) + 1
    return counters, days


def _of(e: Contract, family_id: str, sls_id: str) -> Contract:
    update: dict = {"family_id": family_id}
    if hasattr(e, "location"):
        update["location"] = e.location.model_copy(update={"sls_id": sls_id})
    else:
        update["sls_id"] = sls_id
    return e.model_copy(update=update)


async def test_the_per_sls_counters_equal_a_recount_whatever_the_order_of_events():
    rng = random.Random(2022)
    store = InMemoryConsoleStore()
    handlers = ConsoleHandlers(store_for=lambda uow: store)
    other_sls = SLS[:-4] + ("0002" if not SLS.endswith("0002") else "0003")
    events: list[Contract] = []
    for n in range(40):
        sls = (SLS, other_sls)[n % 2]
        fid = f"{sls}-{n + 1:04d}-001"
        story = [SUBMITTED, flagged(seq=1, minutes=n % 7), verified(seq=2, minutes=n % 5 + 1),
                 flagged(seq=3, minutes=9, reason="duplicate_interview"), resolution(minutes=4)]
        events += [_of(e, fid, sls) for e in rng.sample(story, rng.randint(1, len(story)))]
    rng.shuffle(events)
    await feed(handlers, *events)
    for n in range(0, 40, 7):  # some families erased
        sls = (SLS, other_sls)[n % 2]
        await feed(handlers, FamilyErased(erasure_id=uuid.uuid4(), family_id=f"{sls}-{n + 1:04d}-001", sls_id=sls,
                                          reason="data_subject_request", erased_at=at(30)))
    counters, days = _recount(store)
    assert {k: v for k, v in store.counters.items() if any(v.values())} == counters
    assert {k: v for k, v in store.days.items() if v} == days
    assert sum(c["verified"] for c in counters.values()) > 0 and sum(c["flagged"] for c in counters.values()) > 0
    # and the progress read from the counters is the recount's
    (row,) = await store.progress(SLS[:10], None, 10)
    assert row.interviewed == sum(c["interviewed"] for c in counters.values())
