"""The console's handlers: each event loads the family's (or SLS's) state from the store, the domain
decides the change in one call, the store saves it. The console publishes nothing."""

from __future__ import annotations

from collections.abc import Callable

from console import consultation, domain
from console.domain import Change, FamilyState
from console.store import ConsoleStore
from regsosek import audit
from regsosek.contracts import (
    Contract,
    EligibilityDecided,
    EligibilityDelivered,
    FamilyClassified,
    FamilyErased,
    FamilyInterview,
    FkpAdjustment,
    FkpDecisionRecorded,
    FkpForum,
    FkpGroundChecked,
    InterviewFlagged,
    InterviewSubmitted,
    InterviewVerified,
    InterviewVerifiedV1,
    RosterSubmitted,
    SlsCompleted,
    SlsRoster,
    VerificationResolved,
)
from regsosek.messaging import Handler, Incoming, UnitOfWork


class ConsoleHandlers:
    def __init__(self, store_for: Callable[[UnitOfWork], ConsoleStore] = lambda uow: ConsoleStore(uow.conn)) -> None:
        self.store_for = store_for

    async def _family_change(self, uow: UnitOfWork, msg: Incoming, family_id: str, sls_id: str,
                             decide: Callable[[FamilyState], Change]) -> None:
        store = self.store_for(uow)
        before = await store.family(family_id)
        change = decide(before or FamilyState.new(family_id, sls_id))
        if change.state is not None:
            await store.save_family(change.state)
            # the SLS's counters move with the family's row, in the same transaction (progress at scale)
            counts = domain.counts_change(change.state.sls_id, before, change.state)
            if not counts.empty:
                await store.change_counts(counts)
        if change.step is not None:
            await store.add_step(msg.envelope.id, family_id, change.step)

    async def on_interview(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: InterviewSubmitted = msg.data  # or a legacy FamilyInterview: only its ids and date are read
        received = domain.received_time(msg.envelope.time, e.interviewed_at)
        await self._family_change(uow, msg, e.family_id, e.location.sls_id, lambda s: domain.on_interview(s, e, received))

    async def on_verified(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: InterviewVerified = msg.data.upgraded() if isinstance(msg.data, InterviewVerifiedV1) else msg.data
        await self._family_change(uow, msg, e.family_id, e.sls_id, lambda s: domain.on_verified(s, e))

    async def on_flagged(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: InterviewFlagged = msg.data
        await self._family_change(uow, msg, e.family_id, e.sls_id, lambda s: domain.on_flagged(s, e))

    async def on_resolution(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: VerificationResolved = msg.data
        await self._family_change(uow, msg, e.family_id, e.sls_id, lambda s: domain.on_resolution(s, e))

    async def on_fkp(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: FkpAdjustment = msg.data
        await self._family_change(uow, msg, e.family_id, e.sls_id, lambda s: domain.on_fkp(e))

    async def on_classified(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: FamilyClassified = msg.data
        await self._family_change(uow, msg, e.family_id, e.sls_id, lambda s: domain.on_classified(s, e))
        await self.store_for(uow).note_versions(e.classified_at, {"model": e.model_version, "decile_basis": e.decile_basis})

    async def on_eligibility(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: EligibilityDecided = msg.data
        await self._family_change(uow, msg, e.family_id, e.sls_id, lambda s: domain.on_eligibility(s, e))
        await self.store_for(uow).note_versions(e.decided_at, {"rules": e.rule_version})

    async def on_delivered(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: EligibilityDelivered = msg.data
        await self._family_change(uow, msg, e.family_id, e.sls_id, lambda s: domain.on_delivered(s, e))

    async def on_forum(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A village's forum opened or closed (console.consultation)."""
        store = self.store_for(uow)
        row = consultation.forum_row(msg.data)
        if consultation.newer_forum(await store.forum(row.forum_id), row):
            await store.save_forum(row)

    async def on_forum_decision(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: FkpDecisionRecorded = msg.data
        await self.store_for(uow).save_forum_decision(consultation.decision_row(e))

    async def on_ground_check(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Only the check's outcome and day: the found family's interview is not kept here."""
        e: FkpGroundChecked = msg.data
        await self.store_for(uow).save_ground_check(consultation.check_row(e))

    async def _roster_count(self, uow: UnitOfWork, count: domain.RosterCount) -> None:
        store = self.store_for(uow)
        kept = domain.merged_roster(await store.roster(count.sls_id), count)
        if kept is not None:
            await store.save_roster(kept)

    async def on_roster(self, uow: UnitOfWork, msg: Incoming) -> None:
        await self._roster_count(uow, domain.roster_count(msg.data))

    async def on_completed(self, uow: UnitOfWork, msg: Incoming) -> None:
        await self._roster_count(uow, domain.completed_count(msg.data))

    async def on_erased(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Erasure: the family leaves the read model (row and journey); audited with ids and counts."""
        e: FamilyErased = msg.data
        store = self.store_for(uow)
        before = await store.family(e.family_id)
        counts = await store.erase_family(e.family_id)
        counts["fkp_forum_rows"] = await store.erase_forum_decisions(e.family_id)
        if before is not None:
            await store.change_counts(domain.counts_change(before.sls_id, before, None))
        await store.record_audit(audit.entry("intake", "service", "family.erase", "family", e.family_id,
                                             request_id=msg.envelope.id,
                                             detail={"erasure_id": str(e.erasure_id), "reason": e.reason.value, **counts}))

    def table(self) -> dict[type[Contract], Handler]:
        """The handler of each contract; legacy types (records still retained on the topics) read the same
        ids: a v1 roster or interview holds identifiers in clear, of which the console keeps none."""
        return {
            SlsRoster: self.on_roster, FamilyInterview: self.on_interview, InterviewVerifiedV1: self.on_verified,
            RosterSubmitted: self.on_roster, InterviewSubmitted: self.on_interview,
            VerificationResolved: self.on_resolution, FkpAdjustment: self.on_fkp,
            InterviewVerified: self.on_verified, InterviewFlagged: self.on_flagged,
            FamilyClassified: self.on_classified, EligibilityDecided: self.on_eligibility,
            SlsCompleted: self.on_completed, EligibilityDelivered: self.on_delivered, FamilyErased: self.on_erased,
            FkpForum: self.on_forum, FkpDecisionRecorded: self.on_forum_decision, FkpGroundChecked: self.on_ground_check,
        }
