"""Intake's service layer: each command or event is loaded (store) → decided (domain, one call) →
saved (store) → published (publisher). Built by intake.app with its settings, store factory and publisher.

HTTP commands open their transaction through the `Transaction` they are given (the runtime's
unit_of_work), only once the submission passed its checks: a refusal for bad content holds no
database connection. The journey steps intake records from downstream events are kept with the
producer's decision sequence; the status view orders verify's and classify's decisions by it,
not by arrival (docs/ORDERING.md)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from intake import domain
from intake import journey_events as seen
from intake.domain import (
    Conflict,
    Decision,
    Erased,
    Erasure,
    Invalid,
    Journey,
    JourneyEntry,
    Outcome,
    Receipt,
    Received,
    Submission,
)
from intake.publisher import IntakePublisher
from intake.settings import IntakeSettings
from intake.store import IntakeStore
from regsosek import audit, db
from regsosek.auth import Principal
from regsosek.contracts import (
    EligibilityDecided,
    EligibilityDelivered,
    FamilyClassified,
    FamilyInterview,
    InterviewFlagged,
    InterviewVerified,
    InterviewVerifiedV1,
)
from regsosek.grouping import Grouped
from regsosek.messaging import Handler, Incoming, UnitOfWork, reads
from regsosek.telemetry import current_trace_headers

Transaction = Callable[[], AbstractAsyncContextManager[UnitOfWork]]
Result = Receipt | Invalid | Conflict | Erased

# Decisions about a family, audited with it in their transaction (rosters and interviews are not).
AUDITED = {"resolution": "resolution.submit", "fkp": "fkp.submit"}


@dataclass(frozen=True)
class Caller:
    """Who asks, and the request's ids for the audit log (never the request itself)."""

    principal: Principal
    request_id: str
    trace_id: str | None

    def audit(self, action: str, object_type: str, object_id: object, *, outcome: str = "ok",
              detail: dict | None = None) -> audit.Entry:
        return audit.entry(self.principal.subject, self.principal.role.value, action, object_type, object_id,
                           outcome=outcome, request_id=self.request_id, trace_id=self.trace_id, detail=detail)


@dataclass(frozen=True)
class Denied:
    """The caller may not read this (its SLS is not in the caller's areas); the refusal is audited."""

    sls_id: str


@dataclass(frozen=True)
class ErasureDone:
    erasure_id: UUID
    family_id: str
    reason: str
    erased_at: datetime
    replayed: bool


class IntakeHandlers:
    """Intake's commands (submissions, erasure, the status read), its retention rule and the
    consumers of the downstream decisions that make up a submission's journey."""

    def __init__(self, settings: IntakeSettings, store_for: Callable[[UnitOfWork], IntakeStore],
                 publisher: IntakePublisher, also_erase: Callable[[UnitOfWork, str], Awaitable[int]] | None = None) -> None:
        self.settings = settings
        self.store_for = store_for
        self.publisher = publisher
        # what other parts of intake keep of a family and an erasure empties (the FKP forum's reasons)
        self.also_erase = also_erase
        self._group: tuple[Transaction, Grouped[tuple[Submission, Caller], Result]] | None = None

    @property
    def collection(self) -> tuple:
        return self.settings.collection_start, self.settings.collection_end

    # ------------------------------------------------------------ submissions (HTTP)

    async def submit(self, transaction: Transaction, data: domain.Submitted, caller: Caller) -> Result:
        """One interview, roster, resolution or FKP result: stored and published once; a resolution
        or FKP result is audited with it (replayed or ok). Checked here, in the request; stored with
        the others that arrive while earlier ones are being stored, in one transaction (group commit:
        `submit_group`), each answered alone and keeping its request's trace."""
        checked = domain.checked_submission(data, caller.principal.subject, collection=self.collection,
                                            trace=current_trace_headers())
        if isinstance(checked, Invalid):
            return checked
        return await self._grouped(transaction).submit((checked, caller))

    def _grouped(self, transaction: Transaction) -> Grouped[tuple[Submission, Caller], Result]:
        # one group commit per transaction factory (a service has one: its runtime's unit_of_work)
        if self._group is None or self._group[0] != transaction:
            self._group = (transaction, Grouped(
                "intake submissions", lambda items: self.submit_group(transaction, items),
                in_flight=self.settings.submit_groups_in_flight, max_items=self.settings.submit_group_max,
                alone=lambda e: not db.is_transient(e)))
        return self._group[1]

    async def submit_group(self, transaction: Transaction,
                           items: Sequence[tuple[Submission, Caller]]) -> list[Receipt | Conflict | Erased]:
        """Checked submissions of several requests in one transaction: decided together
        (`accept`: a repeat or a conflict within the group is answered as across groups), the
        resolutions and FKP results audited with their callers."""
        async with transaction() as uow:
            results = await self.accept(uow, [sub for sub, _ in items])
            for (sub, caller), result in zip(items, results, strict=True):
                if sub.kind in AUDITED and isinstance(result, Receipt):
                    await self.store_for(uow).record_audit(caller.audit(
                        AUDITED[sub.kind], "family", sub.family_id, outcome="replayed" if result.replayed else "ok",
                        detail={"submission_id": str(sub.submission_id)}))
        return results

    async def submit_interviews(self, transaction: Transaction, interviews: Sequence[FamilyInterview],
                                caller: Caller) -> list[Result]:
        """Many interviews (an upload after offline work): each answered alone, in order; every valid
        one in one transaction (one insert and one outbox write for the whole upload)."""
        checked = [domain.checked_submission(iv, caller.principal.subject, collection=self.collection)
                   for iv in interviews]
        valid = [c for c in checked if isinstance(c, Submission)]
        accepted: Iterator[Receipt | Conflict | Erased] = iter(())
        if valid:  # else nothing to store: no transaction
            async with transaction() as uow:
                accepted = iter(await self.accept(uow, valid))
        return [c if isinstance(c, Invalid) else next(accepted) for c in checked]

    async def accept(self, uow: UnitOfWork, subs: Sequence[Submission]) -> list[Receipt | Conflict | Erased]:
        """Decides on each submission (domain.decide_submissions), stores and publishes the new ones;
        for each, in order, its receipt (the first one again for a repeat), a Conflict or Erased."""
        store = self.store_for(uow)
        state = await store.intake_state(subs)
        outcomes = domain.decide_submissions(subs, state)
        new = [o.submission for o in outcomes if o.decision is Decision.NEW]
        saved = await store.save_submissions(new, state.erased_families)
        lost = {s.submission_id for s in new if s.submission_id not in saved}
        again: Iterator[Receipt | Conflict | Erased] = iter(())
        if lost:  # a concurrent request with the same id, or an erasure, committed first: decided again
            again = iter(await self.accept(uow, [s for s in subs if s.submission_id in lost]))
        for s in new:
            if s.submission_id in saved:
                self.publisher.submission_accepted(uow, s, saved[s.submission_id].event_id)
        return [next(again) if o.submission.submission_id in lost else _answer(o, outcomes, saved) for o in outcomes]

    # ------------------------------------------------------------ status view (HTTP)

    async def journey(self, transaction: Transaction, submission_id: UUID, caller: Caller) -> Journey | Denied | None:
        """A submission's journey for a caller of its area, the read audited (who, which submission and
        family, when, from which request); a caller of another area is denied, and that is audited too."""
        async with transaction() as uow:
            store = self.store_for(uow)
            journey = await store.journey(submission_id)
            if journey is None:
                return None
            sub = journey.submission
            if not caller.principal.may_act_for(sub.sls_id):
                await store.record_audit(caller.audit("submission.read", "submission", submission_id,
                                                      outcome="denied"))
                return Denied(sub.sls_id)
            await store.record_audit(caller.audit("submission.read", "submission", submission_id,
                                                  detail={"family_id": sub.family_id} if sub.family_id else None))
        return journey

    # ------------------------------------------------------------ erasure (HTTP)

    async def erase_family(self, transaction: Transaction, family_id: str, reason: str, reference: str | None,
                           caller: Caller) -> ErasureDone:
        """Erases the family's identifiers from every body intake keeps (re-sealed), marks it erased
        (its later submissions get 410), audits it and publishes family-erased, in one transaction.
        Repeated, it changes nothing and answers with the first erasure (audited as replayed)."""
        async with transaction() as uow:
            store = self.store_for(uow)
            decision = domain.decide_erasure(family_id, await store.erasure_state(family_id))
            if (earlier := decision.earlier) is not None:
                await store.record_audit(caller.audit("family.erase", "family", family_id, outcome="replayed",
                                                      detail={"erasure_id": str(earlier.erasure_id)}))
                return ErasureDone(earlier.erasure_id, family_id, earlier.reason, earlier.erased_at, True)
            erasure = Erasure(uuid.uuid4(), family_id, family_id[:14], reason, reference, caller.principal.subject)
            erased_at = await store.save_erasure(erasure, decision.redacted)
            others = {} if self.also_erase is None else {"fkp_reasons": await self.also_erase(uow, family_id)}
            self.publisher.family_erased(uow, erasure, erased_at)
            await store.record_audit(caller.audit(
                "family.erase", "family", family_id,
                detail={"erasure_id": str(erasure.erasure_id), "reason": reason, "reference": reference,
                        **{f"{k}_bodies": v for k, v in sorted(decision.changed.items())}, **others}))
        return ErasureDone(erasure.erasure_id, family_id, reason, erased_at, False)

    # ------------------------------------------------------------ retention

    async def expire_bodies(self, store: IntakeStore, before: datetime, limit: int) -> int:
        """Retention: empties the body of at most `limit` submissions received before `before` whose
        journey is final (domain.body_expires); the row, its hash and the journey stay."""
        return await store.empty_bodies(domain.expired_bodies(await store.expiring_bodies(before, limit), before))

    # ------------------------------------------------------------ downstream events: the journey

    def consumers(self) -> dict[type, Handler]:
        return {
            InterviewVerified: self.on_verified,
            InterviewVerifiedV1: self.on_verified_v1,
            InterviewFlagged: self.on_flagged,
            FamilyClassified: self.on_classified,
            EligibilityDecided: self.on_eligibility,
            EligibilityDelivered: self.on_delivered,
        }

    # Each reads only what its journey step keeps (intake.journey_events; the consumer decodes no more).

    @reads(seen.Verified)
    async def on_verified(self, uow: UnitOfWork, msg: Incoming) -> None:
        """The status view takes the outcome, time, sequence and submission id, nothing of the
        family's profile (the journey step holds no personal data)."""
        e: seen.Verified = msg.data
        self._record(uow, JourneyEntry(e.profile.submission_id, "verified",
                                       {"outcome": e.outcome.value, "at": e.verified_at.isoformat()},
                                       msg.envelope.id, e.decision_seq))

    @reads(seen.VerifiedV1)
    async def on_verified_v1(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A v1 record (still on the topic after the rollout): only its submission id is read from
        the interview it carries."""
        e: seen.VerifiedV1 = msg.data
        self._record(uow, JourneyEntry(e.interview.submission_id, "verified",
                                       {"outcome": e.outcome.value, "at": e.verified_at.isoformat()},
                                       msg.envelope.id, e.decision_seq))

    @reads(seen.Flagged)
    async def on_flagged(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: seen.Flagged = msg.data
        self._record(uow, JourneyEntry(e.submission_id, "flagged", {"reason": e.reason.value, "detail": e.detail,
                                                                    "at": e.flagged_at.isoformat()},
                                       msg.envelope.id, e.decision_seq))

    @reads(seen.Classified)
    async def on_classified(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: seen.Classified = msg.data
        self._record(uow, JourneyEntry(e.submission_id, "classified",
                                       {"welfare_group": int(e.welfare_group), "decile": e.decile,
                                        "model_version": e.model_version, "at": e.classified_at.isoformat()},
                                       msg.envelope.id, e.decision_seq))

    @reads(seen.Eligibility)
    async def on_eligibility(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: seen.Eligibility = msg.data
        self._record(uow, JourneyEntry(e.submission_id, "eligibility",
                                       {"eligible": [d.programme for d in e.decisions if d.eligible],
                                        "rule_version": e.rule_version, "at": e.decided_at.isoformat()},
                                       msg.envelope.id, e.decision_seq))

    @reads(seen.Delivered)
    async def on_delivered(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: seen.Delivered = msg.data
        self._record(uow, JourneyEntry(e.submission_id, "notified",
                                       {"subscriber": e.subscriber, "at": e.delivered_at.isoformat()}, msg.envelope.id))

    def _record(self, uow: UnitOfWork, entry: JourneyEntry) -> None:
        """A step of a submission's journey; the batch's steps are written together at commit."""
        entries: list[JourneyEntry] = uow.cache.setdefault("journey", [])
        entries.append(entry)

        async def write() -> None:
            await self.store_for(uow).save_steps(list(entries))
            entries.clear()

        uow.defer("journey", write)

    record_step = _record  # for the living registry's consumer (RegistryHandlers.on_update_held)


def _answer(o: Outcome, outcomes: Sequence[Outcome], saved: dict[UUID, Received]) -> Receipt | Conflict | Erased:
    s = o.submission
    if o.decision is Decision.ERASED:
        assert s.family_id is not None
        return Erased(s.family_id)
    if o.decision is Decision.CONFLICT:
        return Conflict(s.submission_id)
    if o.decision is Decision.NEW:
        return Receipt.of(saved[s.submission_id], replayed=False)
    if o.earlier is not None:
        return Receipt.of(o.earlier, replayed=True)
    assert o.first is not None  # a repeat within the batch
    return Receipt.of(saved[outcomes[o.first].submission.submission_id], replayed=True)
