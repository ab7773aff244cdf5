"""Verify's handlers: rosters, interviews and supervisor resolutions in; verified or
flagged interviews and completed SLS out (one DB transaction per batch, see regsosek.messaging).

Everything that changes one SLS (a roster, an interview, a resolution, a hold timing
out) first takes that SLS's lock, so instances sharing the partitions never interleave
on one SLS; NIK claims are nation-wide through their primary key.
"""

from __future__ import annotations

from datetime import UTC, datetime

from regsosek import audit
from regsosek.contracts import (
    FamilyErased,
    FamilyInterview,
    InterviewFlagged,
    InterviewSubmitted,
    RosterSubmitted,
    SlsCompleted,
    SlsRoster,
    VerificationResolved,
    pseudonymise_interview,
    pseudonymise_roster,
)
from regsosek.messaging import Incoming, PermanentError, UnitOfWork
from regsosek.telemetry import current_trace_headers, in_trace_of
from regsosek.topics import Topic
from verify import domain, store
from verify.settings import VerifySettings

settings = VerifySettings()


def _legacy_key(what: str) -> str:
    key = settings.legacy_key()
    if key is None:
        raise PermanentError(f"{what} of the v1 shape (identifiers in clear) needs REGSOSEK_LEGACY_NIK_HASH_KEY "
                             "to be pseudonymised; re-drive it once that key is set")
    return key


def interview_of(body: dict) -> InterviewSubmitted:
    """A stored interview body: v2, or (stored before migration 004 and not yet converted) v1,
    pseudonymised on reading."""
    if "kk_number" in body["location"] or any("name" in m for m in body["members"]):
        return pseudonymise_interview(FamilyInterview.model_validate(body), _legacy_key("a stored interview"))
    return InterviewSubmitted.model_validate(body)


def publish(uow: UnitOfWork, iv: InterviewSubmitted, d: domain.Decision, decision_seq: int) -> None:
    now = datetime.now(UTC)
    if d.verified:
        uow.outbox.publish(Topic.INTERVIEW_VERIFIED, iv.location.sls_id,
                           domain.verified_event(iv, d, now, decision_seq), subject=iv.family_id)
    else:
        uow.outbox.publish(Topic.INTERVIEW_FLAGGED, iv.location.sls_id,
                           InterviewFlagged(family_id=iv.family_id, sls_id=iv.location.sls_id,
                                            submission_id=iv.submission_id, version=iv.version, reason=d.reason,
                                            detail=d.detail, flagged_at=now, decision_seq=decision_seq),
                           subject=iv.family_id)


async def record(uow: UnitOfWork, iv: InterviewSubmitted, d: domain.Decision, *, cause: str,
                 roster: domain.Roster | None) -> None:
    """Stores the family's new outcome under its next decision sequence (with its history line)
    and publishes it with that sequence."""
    matched = domain.matched_key(iv, roster.entries) if roster else None
    seq = await store.set_state(uow.conn, iv, d, cause=cause, matched=matched,
                                roster_revision=roster.revision if roster else None)
    publish(uow, iv, d, seq)


async def judge(uow: UnitOfWork, iv: InterviewSubmitted, roster: domain.Roster) -> domain.Decision:
    """The interview against its roster, after claiming its members' NIKs nation-wide."""
    clashes = await store.claim_niks(uow.conn, iv.family_id, iv.nik_hashes())
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


async def on_interview_v1(uow: UnitOfWork, msg: Incoming) -> None:
    """A v1 record (identifiers in clear; from before the rollout, or re-driven): pseudonymised on
    arrival exactly as intake does now, and only that form is used and kept."""
    await _interview(uow, pseudonymise_interview(msg.data, _legacy_key("an interview")))


async def on_interview(uow: UnitOfWork, msg: Incoming) -> None:
    await _interview(uow, msg.data)


async def _interview(uow: UnitOfWork, iv: InterviewSubmitted) -> None:
    await store.lock_sls_once(uow, iv.location.sls_id)
    if await store.is_erased(uow.conn, iv.family_id):
        return  # erased (family-erased): intake refuses its later submissions; an older record changes nothing
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
    await _roster(uow, msg.data)


async def on_roster_v1(uow: UnitOfWork, msg: Incoming) -> None:
    """A v1 roster (KK numbers and names in clear): pseudonymised on arrival, only that is kept."""
    await _roster(uow, pseudonymise_roster(msg.data, _legacy_key("a roster")))


async def _roster(uow: UnitOfWork, r: RosterSubmitted) -> None:
    await store.lock_sls_once(uow, r.sls_id)
    erased = {row["family_id"] for row in await store.erased_in(uow.conn, r.sls_id)}
    if erased:  # an erased family's KK hash is not kept again (a roster listing it re-sent later)
        r = r.model_copy(update={"families": [
            f.model_copy(update={"kk_hash": None}) if _fid(r.sls_id, f) in erased else f for f in r.families]})
    await store.save_roster(uow.conn, r)
    roster = uow.cache[("roster", r.sls_id)] = await store.roster(uow.conn, r.sls_id)
    for row in await store.interviews_in(uow.conn, r.sls_id):
        iv = interview_of(row["body"])
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
    if cur["body"] is None:
        raise PermanentError(f"family {r.family_id} was erased; nothing to resolve")
    iv = interview_of(cur["body"])
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
    iv = interview_of(row["body"])
    roster = await roster_of(uow, sls_id)
    with in_trace_of(row["traceparent"]):
        if roster is None:
            await record(uow, iv, domain.no_roster(timeout_s / 3600), cause="hold_timeout", roster=None)
        else:
            await record(uow, iv, await judge(uow, iv, roster), cause="roster", roster=roster)
            update_progress(uow, roster)
    return True


def _fid(sls_id: str, f) -> str:
    return f"{sls_id}-{f.building_no:04d}-{f.family_no:03d}"


async def on_erased(uow: UnitOfWork, msg: Incoming) -> None:
    """Erases what verify holds of the family (store.erase_family) and records it in the audit log
    (ids and counts only)."""
    e: FamilyErased = msg.data
    await store.lock_sls_once(uow, e.sls_id)
    counts = await store.erase_family(uow.conn, e)
    await audit.record(uow.conn, audit.entry(
        "intake", "service", "family.erase", "family", e.family_id, request_id=msg.envelope.id,
        detail={"erasure_id": str(e.erasure_id), "reason": e.reason.value, **counts}))


HANDLERS = {
    InterviewSubmitted: on_interview,
    RosterSubmitted: on_roster,
    VerificationResolved: on_resolution,
    FamilyErased: on_erased,
    # legacy types (read only): v1 records retained on the topics or re-driven
    FamilyInterview: on_interview_v1,
    SlsRoster: on_roster_v1,
}
