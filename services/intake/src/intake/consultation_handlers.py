"""Intake's village consultation commands (FKP; docs/CONSULTATION.md): open, record, close a
village's forum and the ground checks of the families it added. Each loads its state once
(consultation_store), lets intake.consultation decide, saves, publishes (the outbox, in the same
transaction) and audits. A found family's interview is stored as an interview submission (its
journey is an interview's) but published once, inside the ground check on fkp-ground-check: verify
decides it as a family added to its SLS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from intake import domain
from intake.consultation import (
    NO_FORUM,
    CheckRecord,
    Decided,
    DecisionIn,
    DecisionRecord,
    ForumOpening,
    ForumRecord,
    GroundCheckIn,
    Refused,
    Verdict,
    check_out,
    decide_close,
    decide_decision,
    decide_ground_check,
    decide_opening,
    decision_out,
    forum_out,
    interview_window,
    prefixed,
)
from intake.consultation_store import ConsultationStore
from intake.domain import Decision, Invalid, Submission
from intake.handlers import Caller, Transaction
from intake.publisher import IntakePublisher
from intake.store import IntakeStore
from regsosek.contracts import (
    FamilyInterview,
    FkpDecisionRecorded,
    FkpForum,
    FkpGroundChecked,
    ForumStatus,
    Participants,
)
from regsosek.messaging import UnitOfWork
from regsosek.topics import Topic


@dataclass(frozen=True)
class Recorded:
    """What was recorded (the body of the answer): 202 the first time, 200 for a repeat."""

    body: dict
    replayed: bool


Answer = Recorded | Refused | Invalid


class ConsultationHandlers:
    def __init__(self, store_for: Callable[[UnitOfWork], ConsultationStore],
                 intake_store_for: Callable[[UnitOfWork], IntakeStore], nik_hash_key: str,
                 publisher: IntakePublisher) -> None:
        self.store_for = store_for
        self.intake_store_for = intake_store_for
        self.nik_hash_key = nik_hash_key
        self.publisher = publisher  # intake's: the found family's identity list

    # ------------------------------------------------------------ the forum

    async def open_forum(self, transaction: Transaction, o: ForumOpening, caller: Caller) -> Answer:
        async with transaction() as uow:
            store = self.store_for(uow)
            same, of_village = await store.opening_state(o.forum_id, o.village_id)
            decided = decide_opening(o, same, of_village)
            if not isinstance(decided, Decided):
                return decided
            forum = decided.earlier if decided.verdict is Verdict.REPEAT else \
                await store.save_forum(o, decided.content_hash, caller.principal.subject)
            assert isinstance(forum, ForumRecord)
            if decided.verdict is Verdict.NEW:
                self._publish_forum(uow, forum, caller.principal.subject)
            await self._audit(uow, caller, "fkp.forum.open", "fkp_forum", o.forum_id, decided)
        return Recorded(forum_out(forum), decided.verdict is Verdict.REPEAT)

    async def close_forum(self, transaction: Transaction, forum_id: UUID, caller: Caller,
                          may_act_for: Callable[[str], bool]) -> Answer:
        async with transaction() as uow:
            store = self.store_for(uow)
            forum = await store.forum_for_update(forum_id)
            if forum is not None and not may_act_for(forum.village_id):
                return Refused(403, f"village {forum.village_id} is not in the areas assigned to the caller")
            decided = decide_close(forum)
            if not isinstance(decided, Decided):
                return decided
            if decided.verdict is Verdict.NEW:
                forum = await store.close_forum(forum_id, caller.principal.subject)
                self._publish_forum(uow, forum, caller.principal.subject)
            assert forum is not None
            await self._audit(uow, caller, "fkp.forum.close", "fkp_forum", forum_id, decided)
        return Recorded(forum_out(forum), decided.verdict is Verdict.REPEAT)

    async def forum_view(self, transaction: Transaction, forum_id: UUID,
                         caller: Caller) -> tuple[ForumRecord, list[dict]] | Refused:
        """The forum and its decisions (each added family with its ground check), for a caller of its
        village; the read is audited, and so is a refusal."""
        async with transaction() as uow:
            store = self.store_for(uow)
            forum = await store.forum(forum_id)
            if forum is None:
                return NO_FORUM
            audit = self.intake_store_for(uow).record_audit
            if not caller.principal.may_act_for(forum.village_id):
                await audit(caller.audit("fkp.forum.read", "fkp_forum", forum_id, outcome="denied"))
                return Refused(403, f"village {forum.village_id} is not in the areas assigned to the caller")
            await audit(caller.audit("fkp.forum.read", "fkp_forum", forum_id))
            return forum, [decision_out(d) for d in await store.decisions_of(forum_id)]

    def _publish_forum(self, uow: UnitOfWork, f: ForumRecord, recorded_by: str) -> None:
        uow.outbox.publish(Topic.FKP_FORUM, f.sls_ids[0], FkpForum(
            forum_id=f.forum_id, village_id=f.village_id, sls_id=f.sls_ids[0], sls_ids=f.sls_ids, held_on=f.held_on,
            participants=[Participants.model_validate(p) for p in f.participants],
            status=ForumStatus.CLOSED if f.closed else ForumStatus.OPEN, decisions=f.decisions,
            added_families=f.added_families, pending_ground_checks=f.pending_ground_checks,
            recorded_by=recorded_by, at=f.closed_at or f.opened_at), subject=f.sls_ids[0])

    # ------------------------------------------------------------ decisions

    async def record_decision(self, transaction: Transaction, forum_id: UUID, d: DecisionIn, caller: Caller) -> Answer:
        async with transaction() as uow:
            store = self.store_for(uow)
            decided = decide_decision(d, await store.decision_state(forum_id, d.decision_id, d.family_id))
            if not isinstance(decided, Decided):
                return decided
            if decided.verdict is Verdict.REPEAT:
                record = decided.earlier
            else:
                record = await store.save_decision(forum_id, d, decided.content_hash, caller.principal.subject)
                self._publish_decision(uow, record)
            assert isinstance(record, DecisionRecord)
            await self._audit(uow, caller, "fkp.decision", "family", d.family_id, decided,
                              forum_id=str(forum_id), decision_id=str(d.decision_id))
        return Recorded(decision_out(record), decided.verdict is Verdict.REPEAT)

    def _publish_decision(self, uow: UnitOfWork, d: DecisionRecord) -> None:
        uow.outbox.publish(Topic.FKP_DECISION, d.sls_id, FkpDecisionRecorded(
            forum_id=d.forum_id, decision_id=d.decision_id, family_id=d.family_id, sls_id=d.sls_id, kind=d.kind,
            welfare_group=d.welfare_group, reason=d.reason, decided_by=d.decided_by, decided_at=d.decided_at),
            subject=d.family_id)

    # ------------------------------------------------------------ ground checks

    async def ground_check(self, transaction: Transaction, forum_id: UUID, family_id: str, c: GroundCheckIn,
                           caller: Caller) -> Answer:
        async with transaction() as uow:
            store = self.store_for(uow)
            state = await store.check_state(forum_id, family_id)
            decided = decide_ground_check(c, family_id, state)
            if not isinstance(decided, Decided):
                return decided
            if decided.verdict is Verdict.REPEAT:
                record = decided.earlier
            else:
                assert state.forum is not None
                sub = None
                if c.interview is not None:
                    sub = await self._interview(uow, c, state.forum, caller)
                    if not isinstance(sub, Submission):
                        return sub
                record = await store.save_check(forum_id, family_id, c, decided.content_hash,
                                                caller.principal.subject, None if sub is None else sub.submission_id)
                self._publish_check(uow, record, family_id, sub)
            assert isinstance(record, CheckRecord)
            await self._audit(uow, caller, "fkp.ground_check", "family", family_id, decided, forum_id=str(forum_id))
        return Recorded(check_out(record), decided.verdict is Verdict.REPEAT)

    async def _interview(self, uow: UnitOfWork, c: GroundCheckIn, forum: ForumRecord,
                         caller: Caller) -> Submission | Invalid | Refused:
        """The found family's interview, checked as every interview (dated on or after the forum) and
        stored as an interview submission; a submission id used before refuses the check."""
        assert c.interview is not None
        checked = domain.checked_submission(c.interview, caller.principal.subject, collection=interview_window(forum))
        if isinstance(checked, Invalid):
            return Invalid(prefixed(checked.problems, "/interview"))
        store = self.intake_store_for(uow)
        (outcome,) = domain.decide_submissions([checked], await store.intake_state([checked]))
        if outcome.decision is Decision.ERASED:
            return Refused(410, "this family's identifiers were erased; its submissions are no longer accepted")
        if outcome.decision is not Decision.NEW or not await store.save_submissions([outcome.submission]):
            return Refused(409, "the interview's submission_id was used before: a ground check brings a new interview")
        return outcome.submission

    def _publish_check(self, uow: UnitOfWork, c: CheckRecord, family_id: str, sub: Submission | None) -> None:
        interview = None if sub is None else domain.event_of(sub.contract, self.nik_hash_key)
        uow.outbox.publish(Topic.FKP_GROUND_CHECK, family_id[:14], FkpGroundChecked(
            forum_id=c.forum_id, family_id=family_id, sls_id=family_id[:14], outcome=c.outcome,
            checked_on=c.checked_on, checked_by=c.checked_by, checked_at=c.checked_at, interview=interview),
            subject=family_id)
        if sub is not None and isinstance(sub.contract, FamilyInterview):
            self.publisher.member_identities(uow, sub.contract)

    # ------------------------------------------------------------ audit

    async def _audit(self, uow: UnitOfWork, caller: Caller, action: str, object_type: str, object_id: object,
                     decided: Decided, **detail: str) -> None:
        """Who recorded what (ids only), as a repeat or not."""
        await self.intake_store_for(uow).record_audit(caller.audit(
            action, object_type, object_id, outcome="replayed" if decided.verdict is Verdict.REPEAT else "ok",
            detail=detail or None))
