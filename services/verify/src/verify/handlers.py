"""Verify's handlers: rosters, interviews and supervisor resolutions in; verified or
flagged interviews and completed SLS out (one DB transaction per batch, see regsosek.messaging).

Everything that changes one SLS (a roster, an interview, a resolution, a hold timing
out) first takes that SLS's lock, so instances sharing the partitions never interleave
on one SLS; NIK claims are nation-wide through their primary key.
"""

from __future__ import annotations

from datetime import UTC, datetime

from regsosek.contracts import (
    FamilyInterview,
    InterviewFlagged,
    InterviewVerified,
    SlsCompleted,
    SlsRoster,
    VerificationResolved,
)
from regsosek.messaging import Incoming, PermanentError, UnitOfWork
from regsosek.telemetry import current_trace_headers, in_trace_of
from regsosek.topics import Topic

from verify import domain, store
from verify.settings import VerifySettings

settings = VerifySettings()


def publish(uow: UnitOfWork, iv: FamilyInterview, d: domain.Decision, decision_seq: int) -> None:
    now = datetime.now(UTC)
    if d.verified:
        uow.outbox.publish(Topic.INTERVIEW_VERIFIED, iv.location.sls_id,
                           InterviewVerified(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome=d.outcome,
                                             verified_at=now, interview=iv, decision_seq=decision_seq),
                           subject=iv.family_id)
    else:
        uow.outbox.publish(Topic.INTERVIEW_FLAGGED, iv.location.sls_id,
                           InterviewFlagged(family_id=iv.family_id, sls_id=iv.location.sls_id,
                                            submission_id=iv.submission_id, version=iv.version, reason=d.reason,
                                            detail=d.detail, flagged_at=now, decision_seq=decision_seq),
                           subject=iv.family_id)


async def record(uow: UnitOfWork, iv: FamilyInterview, d: domain.Decision, *, cause: str,
                 roster: domain.Roster | None) -> None:
    """Stores the family's new outcome under its next decision sequence (with its history line)
    and publishes it with that sequence."""
    matched = domain.matched_key(iv, roster.entries) if roster else None
    seq = await store.set_state(uow.conn, iv, d, cause=cause, matched=matched,
                                roster_revision=roster.revision if roster else None)
    publish(uow, iv, d, seq)


async def judge(uow: UnitOfWork, iv: FamilyInterview, roster: domain.Roster) -> domain.Decision:
    """The interview against its roster, after claiming its members' NIKs nation-wide."""
    clashes = await store.claim_niks(uow.conn, iv.family_id, store.nik_hashes(settings.nik_hash_key, iv))
    return domain.duplicate_nik(clashes) if clashes else domain.decide(iv, roster.entries)


async def roster_of(uow: UnitOfWork, sls_id: str) -> domain.Roster | None:
    """The SLS's current roster, read once per transaction (a batch holds many of its families)."""
    key = ("roster", sls_id)
    if key not in uow.cache:
        uow.cache[key] = await store.roster(uow.conn, sls_id)
    return uow.cache[key]


def update_progress(uow: UnitOfWork, roster: domain.Roster) -> None:
    """Recount the SLS once, just before the transaction commits (after all of the batch's
    decisions on it), rather than after every interview."""
    uow.defer(("progress", roster.sls_id), lambda: _recount(uow, roster.sls_id))


async def _recount(uow: UnitOfWork, sls_id: str) -> None:
    """Recounts the SLS; the first time it is complete under this roster revision, says so."""
    roster = await roster_of(uow, sls_id)
    rows = await store.decided_in(uow.conn, roster.sls_id)
    p = domain.progress(roster.entries, [
        domain.Decided(r["state"] == "verified",
                       None if r["roster_building_no"] is None else (r["roster_building_no"], r["roster_family_no"]))
        for r in rows
    ])
    await store.save_progress(uow.conn, roster.sls_id, roster.revision, p)
    if p.complete and await store.record_completion(uow.conn, roster.sls_id, roster.revision, p):
        uow.outbox.publish(Topic.SLS_COMPLETED, roster.sls_id, SlsCompleted(
            sls_id=roster.sls_id, roster_revision=roster.revision, roster_submission_id=roster.submission_id,
            expected=p.expected, interviewed=p.interviewed, verified=p.verified, flagged=p.flagged,
            absent=p.absent, completed_at=datetime.now(UTC)), subject=roster.sls_id)


async def on_interview(uow: UnitOfWork, msg: Incoming) -> None:
    iv: FamilyInterview = msg.data
    await store.lock_sls_once(uow, iv.location.sls_id)
    cur = await store.current(uow.conn, iv.family_id)
    arrival = domain.interview_arrival(None if cur is None else (cur["version"], str(cur["submission_id"])), iv)
    if arrival is domain.Arrival.SUPERSEDED or arrival is domain.Arrival.REPEATED:
        return  # a newer version is already here, or the same submission again (already held or decided)
    if arrival is domain.Arrival.DUPLICATE:
        # a second submission of the same version: no decision about the family, so it takes no
        # new sequence number and carries the family's current one (see domain.interview_arrival)
        d = domain.duplicate_interview()
        await store.add_history(uow.conn, iv, d, cause="duplicate_interview", roster_revision=None,
                                decision_seq=cur["decision_seq"])
        publish(uow, iv, d, cur["decision_seq"])
        return
    await store.save_held(uow.conn, iv, current_trace_headers().get("traceparent"))
    roster = await roster_of(uow, iv.location.sls_id)
    if roster is None:
        return  # held until the roster arrives (or the hold times out)
    await record(uow, iv, await judge(uow, iv, roster), cause="interview", roster=roster)
    update_progress(uow, roster)


async def on_roster(uow: UnitOfWork, msg: Incoming) -> None:
    """Stores the roster revision, decides the interviews held for it, and re-verifies the
    families already decided in the SLS: a new outcome is published only where it changed.
    A supervisor's decision stands (until a new interview version)."""
    r: SlsRoster = msg.data
    await store.lock_sls_once(uow, r.sls_id)
    await store.save_roster(uow.conn, r)
    roster = uow.cache[("roster", r.sls_id)] = await store.roster(uow.conn, r.sls_id)
    for row in await store.interviews_in(uow.conn, r.sls_id):
        iv = FamilyInterview.model_validate(row["body"])
        if row["state"] == "held":
            with in_trace_of(row["traceparent"]):
                await record(uow, iv, await judge(uow, iv, roster), cause="roster", roster=roster)
            continue
        matched = domain.matched_key(iv, roster.entries)
        if not domain.decided_by_supervisor(row["state"], row["outcome"]):
            d = await judge(uow, iv, roster)
            if domain.changed(row["state"], row["outcome"], row["detail"], d):
                await record(uow, iv, d, cause="roster_revision", roster=roster)
                continue
        await store.set_match(uow.conn, iv.family_id, matched, roster.revision)
    update_progress(uow, roster)


async def on_resolution(uow: UnitOfWork, msg: Incoming) -> None:
    r: VerificationResolved = msg.data
    await store.lock_sls_once(uow, r.family_id[:14])  # the family id begins with its SLS id
    cur = await store.current(uow.conn, r.family_id)
    if cur is None:
        raise PermanentError(f"no interview for family {r.family_id} to resolve")
    try:
        d = domain.resolve(cur["state"], r)
    except domain.NotResolvable as e:
        raise PermanentError(str(e)) from None
    iv = FamilyInterview.model_validate(cur["body"])
    await store.save_resolution(uow.conn, r, iv.version)
    if d is None:
        return  # already so; the resolution is kept
    roster = await roster_of(uow, iv.location.sls_id)
    await record(uow, iv, d, cause="resolution", roster=roster)
    if roster is not None:
        update_progress(uow, roster)


async def flag_if_still_held(uow: UnitOfWork, family_id: str, sls_id: str, timeout_s: float) -> bool:
    """The hold sweep for one family: flagged "no roster" if still held past the timeout.
    Should its roster be there after all, it is decided against it instead."""
    await store.lock_sls_once(uow, sls_id)
    row = await store.expired_hold(uow.conn, family_id, timeout_s)
    if row is None:
        return False
    iv = FamilyInterview.model_validate(row["body"])
    roster = await roster_of(uow, sls_id)
    with in_trace_of(row["traceparent"]):
        if roster is None:
            await record(uow, iv, domain.no_roster(timeout_s / 3600), cause="hold_timeout", roster=None)
        else:
            await record(uow, iv, await judge(uow, iv, roster), cause="roster", roster=roster)
            update_progress(uow, roster)
    return True


HANDLERS = {FamilyInterview: on_interview, SlsRoster: on_roster, VerificationResolved: on_resolution}
