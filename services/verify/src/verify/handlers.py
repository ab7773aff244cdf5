"""Verify's handlers: rosters, interviews and supervisor resolutions in; verified or
flagged interviews out (one DB transaction per batch, see regsosek.messaging)."""

from __future__ import annotations

from datetime import UTC, datetime

from regsosek.contracts import (
    FamilyInterview,
    FlagReason,
    InterviewFlagged,
    InterviewVerified,
    SlsRoster,
    SupervisorDecision,
    VerificationOutcome,
    VerificationResolved,
)
from regsosek.messaging import Incoming, PermanentError, UnitOfWork
from regsosek.telemetry import current_trace_headers, in_trace_of
from regsosek.topics import Topic

from verify import domain, store
from verify.settings import VerifySettings

settings = VerifySettings()


def publish(uow: UnitOfWork, iv: FamilyInterview, d: domain.Decision) -> None:
    now = datetime.now(UTC)
    if d.verified:
        uow.outbox.publish(Topic.INTERVIEW_VERIFIED, iv.location.sls_id,
                           InterviewVerified(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome=d.outcome,
                                             verified_at=now, interview=iv), subject=iv.family_id)
    else:
        uow.outbox.publish(Topic.INTERVIEW_FLAGGED, iv.location.sls_id,
                           InterviewFlagged(family_id=iv.family_id, sls_id=iv.location.sls_id,
                                            submission_id=iv.submission_id, version=iv.version, reason=d.reason,
                                            detail=d.detail, flagged_at=now), subject=iv.family_id)


async def record(uow: UnitOfWork, iv: FamilyInterview, d: domain.Decision) -> None:
    state = "verified" if d.verified else "flagged"
    await store.set_state(uow.conn, iv.family_id, state, (d.outcome or d.reason).value, d.detail)
    publish(uow, iv, d)


async def decide_if_roster(uow: UnitOfWork, iv: FamilyInterview) -> None:
    roster = await store.roster(uow.conn, iv.location.sls_id)
    if roster is None:
        return  # held until the roster arrives (or the hold times out)
    clashes = await store.claim_niks(uow.conn, iv.family_id, store.nik_hashes(settings.nik_hash_key, iv))
    d = domain.duplicate_nik(clashes) if clashes else domain.decide(iv, roster)
    await record(uow, iv, d)


async def on_interview(uow: UnitOfWork, msg: Incoming) -> None:
    iv: FamilyInterview = msg.data
    cur = await store.current(uow.conn, iv.family_id)
    if cur is not None:
        if cur["version"] > iv.version:
            return  # a newer version was already verified; this one is superseded
        if cur["version"] == iv.version and str(cur["submission_id"]) != str(iv.submission_id):
            publish(uow, iv, domain.duplicate_interview())
            return
    await store.save_held(uow.conn, iv, current_trace_headers().get("traceparent"))
    await decide_if_roster(uow, iv)


async def on_roster(uow: UnitOfWork, msg: Incoming) -> None:
    r: SlsRoster = msg.data
    await store.save_roster(uow.conn, r)
    for row in await store.held_in(uow.conn, r.sls_id):
        with in_trace_of(row["traceparent"]):
            await decide_if_roster(uow, FamilyInterview.model_validate(row["body"]))


async def on_resolution(uow: UnitOfWork, msg: Incoming) -> None:
    r: VerificationResolved = msg.data
    cur = await store.current(uow.conn, r.family_id)
    if cur is None:
        raise PermanentError(f"no interview for family {r.family_id} to resolve")
    if cur["state"] != "flagged":
        raise PermanentError(f"family {r.family_id} is {cur['state']}, not flagged; nothing to resolve")
    await store.save_resolution(uow.conn, r)
    iv = FamilyInterview.model_validate(cur["body"])
    if r.decision is SupervisorDecision.VERIFY:
        d = domain.Decision(True, outcome=VerificationOutcome.VERIFIED_BY_SUPERVISOR,
                            detail=f"verified by supervisor {r.supervisor_id}")
        await record(uow, iv, d)
    else:
        d = domain.Decision(False, reason=FlagReason.REJECTED_BY_SUPERVISOR,
                            detail=f"rejected by supervisor {r.supervisor_id}: {r.reason}"[:500])
        await store.set_state(uow.conn, iv.family_id, "rejected", d.reason.value, d.detail)
        publish(uow, iv, d)


HANDLERS = {FamilyInterview: on_interview, SlsRoster: on_roster, VerificationResolved: on_resolution}
