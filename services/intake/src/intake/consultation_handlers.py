"""Intake's village consultation commands (FKP; docs/CONSULTATION.md): open, record, close a
village's forum and the ground checks of the families it added. Each loads its state once
(consultation_store, and for a found family's interview what intake holds of its submission id),
lets intake.consultation decide in one call, saves, hands the events to intake's one publisher
(the outbox, in the same transaction) and audits. A found family's interview is stored as an
interview submission (its journey is an interview's) but published once, inside the ground check
on fkp-ground-check: verify decides it as a family added to its SLS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from intake.consultation import (
    INTERVIEW_ID_USED,
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
    found_interview,
)
from intake.consultation_store import ConsultationStore
from intake.domain import IntakeState, Invalid, Submission
from intake.handlers import Caller, Transaction
from intake.publisher import IntakePublisher
from intake.store import IntakeStore
from regsosek.messaging import UnitOfWork


@dataclass(frozen=True)
class Recorded:
    """What was recorded (the body of the answer): 202 the first time, 200 for a repeat."""

    body: dict
    replayed: bool


Answer = Recorded | Refused | Invalid


class ConsultationHandlers:
    def __init__(self, store_for: Callable[[UnitOfWork], ConsultationStore],
                 intake_store_for: Callable[[UnitOfWork], IntakeStore], publisher: IntakePublisher) -> None:
        self.store_for = store_for
        self.intake_store_for = intake_store_for
        self.publisher = publisher  # intake's one publisher

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
                self.publisher.forum_recorded(uow, forum, caller.principal.subject)
            await self._audit(uow, caller, "fkp.forum.open", "fkp_forum", o.forum_id, decided)
        return Recorded(forum_out(forum), decided.verdict is Verdict.REPEAT)

    async def close_forum(self, transaction: Transaction, forum_id: UUID, caller: Caller,
                          may_act_for: Callable[[str], bool]) -> Answer:
        async with transaction() as uow:
            store = self.store_for(uow)
            forum = await store.forum_for_update(forum_id)
            if forum is not None and not may_act_for(forum.village_id):
                return Refused(403, "the forum's village is not in the areas assigned to the caller")
            decided = decide_close(forum)
            if not isinstance(decided, Decided):
                return decided
            if decided.verdict is Verdict.NEW:
                forum = await store.close_forum(forum_id, caller.principal.subject)
                self.publisher.forum_recorded(uow, forum, caller.principal.subject)
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
                return Refused(403, "the forum's village is not in the areas assigned to the caller")
            await audit(caller.audit("fkp.forum.read", "fkp_forum", forum_id))
            return forum, [decision_out(d) for d in await store.decisions_of(forum_id)]

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
                self.publisher.decision_recorded(uow, record)
            assert isinstance(record, DecisionRecord)
            await self._audit(uow, caller, "fkp.decision", "family", d.family_id, decided,
                              forum_id=str(forum_id), decision_id=str(d.decision_id))
        return Recorded(decision_out(record), decided.verdict is Verdict.REPEAT)

    # ------------------------------------------------------------ ground checks

    async def ground_check(self, transaction: Transaction, forum_id: UUID, family_id: str, c: GroundCheckIn,
                           caller: Caller) -> Answer:
        interview = found_interview(c, caller.principal.subject)
        async with transaction() as uow:
            store, intake = self.store_for(uow), self.intake_store_for(uow)
            state = await store.check_state(forum_id, family_id)
            held = await intake.intake_state([interview]) if isinstance(interview, Submission) else IntakeState()
            decided = decide_ground_check(c, family_id, state, interview, held)
            if not isinstance(decided, Decided):
                return decided
            if decided.verdict is Verdict.REPEAT:
                record = decided.earlier
            else:
                found = decided.interview
                if found is not None and not await intake.save_submissions([found]):
                    return INTERVIEW_ID_USED  # a concurrent request with the same id committed first
                record = await store.save_check(forum_id, family_id, c, decided.content_hash,
                                                caller.principal.subject, None if found is None else found.submission_id)
                self.publisher.ground_checked(uow, record, found)
            assert isinstance(record, CheckRecord)
            await self._audit(uow, caller, "fkp.ground_check", "family", family_id, decided, forum_id=str(forum_id))
        return Recorded(check_out(record), decided.verdict is Verdict.REPEAT)

    # ------------------------------------------------------------ audit

    async def _audit(self, uow: UnitOfWork, caller: Caller, action: str, object_type: str, object_id: object,
                     decided: Decided, **detail: str) -> None:
        """Who recorded what (ids only), as a repeat or not."""
        await self.intake_store_for(uow).record_audit(caller.audit(
            action, object_type, object_id, outcome="replayed" if decided.verdict is Verdict.REPEAT else "ok",
            detail=detail or None))
