"""The handlers on the in-memory store with the real unit of work (no database, no broker):
load, decide, save; erasure removes the family; the console publishes nothing."""

from __future__ import annotations

import dataclasses
import random
import uuid

from console import domain
from console.domain import VerifyState
from console.handlers import ConsoleHandlers
from regsosek.contracts import Contract, FamilyErased, SlsCompleted
from regsosek.envelope import new_envelope
from regsosek.messaging import Incoming
from regsosek.testing import FakeUnitOfWork

from console_events import FAMILY, SLS, SUBMITTED, at, classified, eligibility, flagged, non_response, resolution, verified
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
        row = counters.setdefault(f.sls_id, dict.fromkeys(domain.FAMILY_FIGURES, 0))
        for figure, n in c.figures.items():
            row[figure] += n
        if c.day is not None:
            days[(f.sls_id, c.day)] = days.get((f.sls_id, c.day), 0) + 1
    return counters, days


def _of(e: Contract, family_id: str, sls_id: str) -> Contract:
    update: dict = {"family_id": family_id}
    if hasattr(e, "location"):
        _, building, number = family_id.rsplit("-", 2)  # an interview names its family by its location
        update["location"] = e.location.model_copy(update={"sls_id": sls_id, "building_no": int(building),
                                                           "family_no": int(number)})
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
                 flagged(seq=3, minutes=9, reason="duplicate_interview"), resolution(minutes=4),
                 non_response(("refused", "moved", "not_found", "no_competent_respondent")[n % 4], version=1 + n % 3)]
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
    assert all(sum(c[f] for c in counters.values()) > 0 for f in domain.FAMILY_FIGURES)
    # and the progress read from the counters is the recount's
    (row,) = await store.progress(SLS[:10], None, 10)
    assert row.interviewed == sum(c["interviewed"] for c in counters.values())
    assert row.refused == sum(c["refused"] for c in counters.values())
    assert row.not_reached == sum(c[f] for c in counters.values() for f in domain.FORM_NOT_REACHED)


async def test_a_refused_family_is_counted_under_refused_and_completes_its_sls():
    store = InMemoryConsoleStore()
    handlers = ConsoleHandlers(store_for=lambda uow: store)
    others = [_of(SUBMITTED, f"{SLS}-{b:04d}-001", SLS) for b in (2, 3)]
    await feed(handlers, non_response("refused", version=1), *others,
               _of(non_response("moved", version=1), f"{SLS}-0004-001", SLS))
    (row,) = await store.progress(SLS, None, len(SLS))
    assert (row.interviewed, row.refused, row.not_reached, row.moved) == (2, 1, 1, 1)
    # verify completes the SLS: its `absent` holds the two non-responses and one family the RT head confirmed absent
    await feed(handlers, SlsCompleted(sls_id=SLS, roster_revision=1, roster_submission_id=uuid.uuid4(), expected=5,
                                      interviewed=2, verified=2, flagged=0, absent=3, non_response=2, completed_at=at(9)))
    (row,) = await store.progress(SLS, None, len(SLS))
    assert (row.expected, row.interviewed, row.refused, row.absent, row.not_reached) == (5, 2, 1, 1, 2)
    assert row.completion == 1.0
