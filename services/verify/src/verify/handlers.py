"""Verify's handlers: rosters, interviews and supervisor resolutions in; verified or flagged
interviews and completed SLS out (one DB transaction per batch, see regsosek.messaging).

Each handler loads one state value from the store, lets the domain decide on it in one call,
saves the outcome through the store and publishes it through the publisher. Should another
family take one of the NIKs between the load and the claim (`ClaimsRaced`, nothing else saved
yet), the event is decided again on fresh state. A batch of interviews only (each family once)
is loaded, decided and saved together by its first interview's handler (`_decide_together`); each
interview's handler still publishes its own decision. Each SLS's progress is recounted once per
transaction, just before it commits, all of a transaction's SLS at once; before that, the updates
kept for the families the transaction verified are decided, each as its own event through the same
steps (release_updates).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from regsosek import audit
from regsosek.contracts import (
    FamilyErased,
    FamilyInterview,
    FkpGroundChecked,
    InterviewSubmitted,
    RosterSubmitted,
    SlsRoster,
    VerificationResolved,
    pseudonymise_interview,
    pseudonymise_roster,
)
from regsosek.contracts.updates import FamilyUpdated
from regsosek.messaging import Handler, Incoming, PermanentError, UnitOfWork
from regsosek.telemetry import current_trace_headers, traceparent_of
from verify import consultation, domain, updates
from verify.publisher import Publisher
from verify.settings import VerifySettings
from verify.store import VerifyStore

StoreFor = Callable[[UnitOfWork], VerifyStore]
Clock = Callable[[], datetime]
State = TypeVar("State")
log = logging.getLogger("verify")
CLAIM_ATTEMPTS = 5  # a NIK lost to a concurrent family more often than this in a row: the batch is retried


_PRELOADED = "verify.preloaded"  # uow.cache key: the batch's interview states were loaded
_VERIFIED = "verify.verified"  # uow.cache key: families verified in this transaction (their kept updates apply)
_DECIDED = "verify.decided"  # uow.cache key: outcomes decided and saved together, not yet published
_PROGRESS = "progress"  # uow.defer key (with the SLS id): the SLS's recount before commit
_RECOUNTED = "verify.recounted"  # uow.cache key: SLS counted and saved, their completions not yet published


def preloadable(batch: Sequence[Incoming]) -> list[Incoming]:
    """The interviews whose states can be loaded (and which can be decided) together before the
    first is decided: all of a batch's interviews when it holds nothing else (a roster, a
    resolution or an erasure changes other families' rows) and no family twice (the second is
    decided on what the first saved)."""
    if not all(isinstance(m.data, InterviewSubmitted) for m in batch):
        return []
    families = Counter(m.data.family_id for m in batch)
    return [m for m in batch if families[m.data.family_id] == 1]


def _held_in(outcome: domain.Outcome, msg: Incoming) -> str | None:
    """The trace an interview the outcome holds (no roster yet) is decided in later: the one its
    record arrived in (a batch decides before the event's own span). None for an interview
    decided at once: nothing resumes its trace."""
    if outcome.held is None or outcome.verdicts or msg.record is None:
        return None
    return traceparent_of(msg.record.headers)


def utc_now() -> datetime:
    return datetime.now(UTC)


class VerifyHandlers:
    """Built by the composition root (verify.app) with the settings, the store factory, the
    publisher and the clock."""

    def __init__(self, settings: VerifySettings, store_for: StoreFor, publisher: Publisher,
                 clock: Clock = utc_now) -> None:
        self.settings = settings
        self.store_for = store_for
        self.publisher = publisher
        self.clock = clock

    def by_event_type(self) -> dict[type, Handler]:
        return {
            InterviewSubmitted: self.on_interview,
            RosterSubmitted: self.on_roster,
            VerificationResolved: self.on_resolution,
            FamilyErased: self.on_erased,
            FamilyUpdated: self.on_update,
            FkpGroundChecked: self.on_ground_check,
            # legacy types (read only): v1 records retained on the topics or re-driven
            FamilyInterview: self.on_interview_v1,
            SlsRoster: self.on_roster_v1,
        }

    # ---------------------------------------------------------------- events

    async def on_interview(self, uow: UnitOfWork, msg: Incoming) -> None:
        await self.interview(uow, msg.data)

    async def on_interview_v1(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A v1 record (identifiers in clear; from before the rollout, or re-driven): pseudonymised on
        arrival exactly as intake does now, and only that form is used and kept."""
        await self.interview(uow, pseudonymise_interview(msg.data, self._legacy_key("an interview")))

    async def interview(self, uow: UnitOfWork, iv: InterviewSubmitted) -> None:
        store = self.store_for(uow)
        if _PRELOADED not in uow.cache:  # the batch's interviews, in one go (first interview of a batch)
            uow.cache[_PRELOADED] = True
            await self._decide_together(uow, store, preloadable(uow.batch))
        outcome = uow.cache.get(_DECIDED, {}).pop((iv.family_id, iv.submission_id), None)
        if outcome is not None:  # decided and saved with the batch's other interviews: published in its own trace
            self._published(uow, outcome)
            return
        traceparent = current_trace_headers().get("traceparent")  # a held interview is decided later in its trace
        await self._decide(uow, lambda: store.interview_state(iv), lambda state: domain.on_interview(state, iv),
                           traceparent)

    async def _decide_together(self, uow: UnitOfWork, store: VerifyStore, batch: list[Incoming]) -> None:
        """A batch's interviews (`preloadable`): their states loaded together, then, unless the unit
        of work is isolated, decided as one outcome (`domain.on_interviews`) and saved together
        (`VerifyStore.save_together`), each held in the trace it arrived in; each interview's
        handler then publishes its own decision. A family whose NIK claim another instance's family
        raced is left out, and decided again alone by its handler on fresh state."""
        interviews = [m.data for m in batch]
        await store.preload_interview_states(interviews)
        if uow.isolated or len(interviews) < 2:
            return
        states = [await store.interview_state(iv) for iv in interviews]
        outcomes = domain.on_interviews(list(zip(states, interviews, strict=True)))
        raced = await store.save_together([(o, _held_in(o, m)) for o, m in zip(outcomes, batch, strict=True)])
        if raced:
            log.info("a NIK was claimed by a concurrent family; deciding again",
                     extra={"fields": {"families": len(raced)}})
        uow.cache[_DECIDED] = {(iv.family_id, iv.submission_id): o for iv, o in zip(interviews, outcomes, strict=True)
                               if iv.family_id not in raced}

    async def on_ground_check(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A family added at a village consultation and ground-checked: a found family's interview is
        decided as a family added to its SLS (verify.consultation); a family not found changes nothing."""
        check: FkpGroundChecked = msg.data
        interview = check.interview
        if interview is None:
            return
        store = self.store_for(uow)
        await self._decide(uow, lambda: store.interview_state(interview),
                           lambda state: consultation.on_ground_check(state, check),
                           current_trace_headers().get("traceparent"))

    async def on_roster(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Stores the roster revision, decides the interviews held for it, and re-verifies the
        families already decided in the SLS (domain.on_roster)."""
        await self.roster(uow, msg.data)

    async def on_roster_v1(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A v1 roster (KK numbers and names in clear): pseudonymised on arrival, only that is kept."""
        await self.roster(uow, pseudonymise_roster(msg.data, self._legacy_key("a roster")))

    async def roster(self, uow: UnitOfWork, r: RosterSubmitted) -> None:
        store = self.store_for(uow)
        await self._decide(uow, lambda: store.roster_state(r), lambda state: domain.on_roster(state, r))

    async def on_resolution(self, uow: UnitOfWork, msg: Incoming) -> None:
        r: VerificationResolved = msg.data
        store = self.store_for(uow)
        try:
            await self._decide(uow, lambda: store.resolution_state(r), lambda state: domain.on_resolution(state, r))
        except domain.NotResolvable as e:
            raise PermanentError(str(e)) from None

    async def on_update(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A field-checked update or a complaint's correction: applied to the family's stored interview
        and decided again (verify.updates.on_update)."""
        e: FamilyUpdated = msg.data
        store = self.store_for(uow)
        await self._decide(uow, lambda: store.update_state(e), lambda state: updates.on_update(state, e))

    async def release_updates(self, uow: UnitOfWork) -> None:
        """Deferred to the end of a transaction that verified families: the updates kept for them
        (verify.updates: an update that came before its family was verified), each decided as on
        arrival, in the order they came (an update applied here verifies its family again: a later
        one kept for it follows in the next pass)."""
        families = sorted(set(uow.cache.pop(_VERIFIED, [])))
        store = self.store_for(uow)
        for e in await store.held_updates(families):
            await self._decide(uow, partial(store.update_state, e), partial(updates.on_update, e=e))

    async def on_update_hold_expired(self, uow: UnitOfWork, e: FamilyUpdated) -> None:
        """The hold sweep for one kept update: its family not verified within the update hold timeout,
        it gets an update_not_applicable flag (applied instead, should the family be verified after all)."""
        store, timeout_s = self.store_for(uow), self.settings.update_hold_timeout_s
        await self._decide(uow, lambda: store.update_state(e), lambda state: updates.on_hold_expired(state, e, timeout_s))

    async def on_hold_expired(self, uow: UnitOfWork, family_id: str, sls_id: str) -> bool:
        """The hold sweep for one family: flagged "no roster" if still held past the timeout (decided
        against its roster should that be there after all). False when it was not held any more."""
        store, timeout_s = self.store_for(uow), self.settings.hold_timeout_s
        outcome = await self._decide(uow, lambda: store.hold_state(family_id, sls_id, timeout_s),
                                     lambda state: domain.on_hold_expired(state, timeout_s))
        return bool(outcome.verdicts)

    async def on_erased(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Erases what verify holds of the family (VerifyStore.erase_family) and records it in the
        audit log (ids and counts only)."""
        e: FamilyErased = msg.data
        store = self.store_for(uow)
        counts = await store.erase_family(e)
        await store.record_audit(audit.entry(
            "intake", "service", "family.erase", "family", e.family_id, request_id=msg.envelope.id,
            detail={"erasure_id": str(e.erasure_id), "reason": e.reason.value, **counts}))

    # ---------------------------------------------------------------- load, decide, save, publish

    async def _decide(self, uow: UnitOfWork, load: Callable[[], Awaitable[State]],
                      decide: Callable[[State], domain.Outcome], traceparent: str | None = None) -> domain.Outcome:
        """Every event the same way: load its one state value, let the domain decide in one call,
        save the outcome, publish it, and have the SLS recounted before commit. A NIK lost to a
        concurrent family between load and save (nothing else saved yet) is decided again."""
        store = self.store_for(uow)
        for attempt in range(CLAIM_ATTEMPTS):
            outcome = decide(await load())
            try:
                await store.save(outcome, traceparent=traceparent)
                break
            except domain.ClaimsRaced as e:
                if attempt == CLAIM_ATTEMPTS - 1:
                    raise
                log.info("a NIK was claimed by a concurrent family; deciding again",
                         extra={"fields": {"family_id": str(e), "attempt": attempt + 1}})
        self._published(uow, outcome)
        return outcome

    def _published(self, uow: UnitOfWork, outcome: domain.Outcome) -> None:
        """The outcome published, and its SLS recounted before commit."""
        self.publisher.outcome(uow, outcome, self.clock())
        # the SLS decided on, and after an SLS change the other SLS of the village concerned: the one
        # whose roster a family was matched on (it counts the family too), the family's own
        others = {v.decision.roster_sls for v in outcome.verdicts if v.decision.roster_sls}
        others |= {v.interview.location.sls_id for v in outcome.verdicts if v.changes_family and outcome.recount}
        for sls_id in sorted(others | ({outcome.recount} if outcome.recount else set())):
            uow.defer((_PROGRESS, sls_id), partial(self.recount, uow, sls_id))
        verified = [v.interview.family_id for v in outcome.verdicts if v.decision.verified and v.changes_family]
        if verified:  # the updates kept for them apply before commit (release_updates)
            uow.cache.setdefault(_VERIFIED, []).extend(verified)
            uow.defer(_VERIFIED, lambda: self.release_updates(uow))

    async def recount(self, uow: UnitOfWork, sls_id: str) -> None:
        """Recounts the SLS once per transaction, after all of the batch's decisions on it; the first
        time it is complete under its roster revision, says so. The first recount of a transaction
        counts and saves every SLS still to be recounted in it (the other deferred recounts) at once,
        in one statement per table; each SLS's completion is published by its own recount, in the
        trace of the events that decided on it."""
        while uow.deferred.pop(_VERIFIED, None) is not None:  # kept updates first: they change what is counted
            await self.release_updates(uow)
        counted: dict[str, tuple[domain.Roster, domain.Progress, bool]] | None = uow.cache.get(_RECOUNTED)
        if counted is None or sls_id not in counted:
            pending = {key[1] for key in uow.deferred if isinstance(key, tuple) and key[0] == _PROGRESS}
            counted = uow.cache[_RECOUNTED] = await self._count(self.store_for(uow), sorted(pending | {sls_id}))
        roster, p, first = counted.pop(sls_id, (None, None, False))
        if first and roster is not None and p is not None:
            self.publisher.sls_completed(uow, roster, p, self.clock())

    @staticmethod
    async def _count(store: VerifyStore, sls_ids: list[str]) -> dict[str, tuple[domain.Roster, domain.Progress, bool]]:
        """Each SLS's progress under its current roster, saved; with whether it is complete under
        that revision for the first time. An SLS without a roster has nothing to count."""
        rosters = {s: r for s, r in (await store.rosters_of(sls_ids)).items() if r is not None}
        decided, relocated = await store.decided_in(sorted(rosters)), await store.relocated_in(sorted(rosters))
        counts = {s: (r, domain.progress(r.entries, decided[s], relocated[s])) for s, r in rosters.items()}
        first = await store.save_progress(list(counts.values()))
        return {s: (r, p, s in first) for s, (r, p) in counts.items()}

    def _legacy_key(self, what: str) -> str:
        key = self.settings.legacy_key()
        if key is None:
            raise PermanentError(f"{what} of the v1 shape (identifiers in clear) needs REGSOSEK_LEGACY_NIK_HASH_KEY "
                                 "to be pseudonymised; re-drive it once that key is set")
        return key

