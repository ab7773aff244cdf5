"""An in-memory IntakeStore for fast tests of intake's handlers (with regsosek.testing.FakeUnitOfWork).

Same public methods and signatures as intake.store.IntakeStore (test_intake_handlers checks it):
what the real store does in SQL, done on dictionaries. Bodies are kept in clear (nothing to seal).
Named after its service: test directories are not packages, so each service's fakes module needs a name of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from uuid import UUID, uuid4

from intake.consultation import (
    CheckRecord,
    CheckState,
    DecisionIn,
    DecisionRecord,
    DecisionState,
    ForumOpening,
    ForumRecord,
    GroundCheckIn,
)
from intake.domain import (
    EarlierErasure,
    Erasure,
    ErasureState,
    Expiring,
    IntakeState,
    Journey,
    JourneyEntry,
    JourneyStep,
    Received,
    Step,
    StoredBody,
    Submission,
    SubmissionRecord,
)
from intake.registry_domain import ComplaintRecord, ComplaintView, RecordedOutcome, UpdateRecord
from regsosek import audit
from regsosek.contracts import FkpDecisionKind
from regsosek.contracts.complaints import Complaint, ComplaintOutcome
from regsosek.contracts.updates import FieldCheck
from regsosek.messaging import UnitOfWork


@dataclass
class Kept:
    received: Received
    document: dict | None
    submitted_by: str


class InMemoryIntakeStore:
    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.now = now
        self.submissions: dict[UUID, Kept] = {}
        self.steps: list[JourneyEntry] = []
        self.erasures: dict[str, tuple[Erasure, datetime]] = {}
        self.audit_log: list[audit.Entry] = []
        self.update_checks: dict[UUID, FieldCheck] = {}
        self.complaints: dict[UUID, ComplaintRecord] = {}
        self.complaint_outcomes: list[tuple[ComplaintOutcome, str]] = []

    async def intake_state(self, subs: Sequence[Submission]) -> IntakeState:
        families = {s.family_id for s in subs if s.family_id}
        roster_sls = {s.sls_id for s in subs if s.kind == "roster"}
        return IntakeState(
            earlier={s.submission_id: self.submissions[s.submission_id].received
                     for s in subs if s.submission_id in self.submissions},
            erased_families=frozenset(f for f in self.erasures if f in families or f[:14] in roster_sls))

    async def save_submissions(self, subs: Sequence[Submission],
                               erased_known: frozenset[str] = frozenset()) -> dict[UUID, Received]:
        saved = {}
        for s in subs:
            if s.submission_id in self.submissions:
                continue
            if any(f not in erased_known and (f == s.family_id or (s.kind == "roster" and f[:14] == s.sls_id))
                   for f in self.erasures):
                continue  # an erasure the decision did not know of
            r = Received(s.submission_id, s.kind, s.sls_id, s.family_id, s.version, s.content_hash, str(uuid4()),
                         self.now(), s.warnings)
            self.submissions[s.submission_id] = Kept(r, s.document, s.submitted_by)
            saved[s.submission_id] = r
        return saved

    async def save_steps(self, entries: Sequence[JourneyEntry]) -> None:
        recorded = {(e.submission_id, e.event_id) for e in self.steps}
        for e in entries:
            if (e.submission_id, e.event_id) not in recorded:
                recorded.add((e.submission_id, e.event_id))
                self.steps.append(e)

    async def journey(self, submission_id: UUID) -> Journey | None:
        kept = self.submissions.get(submission_id)
        if kept is None:
            return None
        r = kept.received
        return Journey(SubmissionRecord(r.submission_id, r.kind, r.sls_id, r.family_id, r.version, None,
                                        r.received_at, r.warnings),
                       [JourneyStep(e.step, e.detail, e.decision_seq) for e in self._steps_of(submission_id)])

    async def record_audit(self, entry: audit.Entry) -> None:
        self.audit_log.append(entry)

    async def expiring_bodies(self, before: datetime, limit: int) -> list[Expiring]:
        out = []
        for k in sorted(self.submissions.values(), key=lambda k: k.received.received_at):
            r = k.received
            steps = [Step(e.step, e.decision_seq) for e in self._steps_of(r.submission_id)]
            may_be_final = r.kind != "interview" or any(s.step in ("eligibility", "flagged") for s in steps)
            if k.document is not None and r.received_at < before and may_be_final:
                out.append(Expiring(r.submission_id, r.kind, r.received_at, steps))
        return out[:limit]

    async def empty_bodies(self, submission_ids: Sequence[UUID]) -> int:
        emptied = [self.submissions[i] for i in submission_ids if self.submissions[i].document is not None]
        for k in emptied:
            k.document = None
        return len(emptied)

    async def unsealed_or_stale(self) -> int:
        return 0  # kept in memory, in clear: nothing to seal

    async def reseal_batch(self, limit: int) -> int:
        return 0

    async def erasure_state(self, family_id: str) -> ErasureState:
        if family_id in self.erasures:
            e, at = self.erasures[family_id]
            return ErasureState(EarlierErasure(e.erasure_id, e.reason, at), [])
        return ErasureState(None, [
            StoredBody(i, k.received.kind, k.document) for i, k in self.submissions.items()
            if k.document is not None and (k.received.family_id == family_id or (
                k.received.kind == "roster" and k.received.sls_id == family_id[:14]))])

    async def save_erasure(self, erasure: Erasure, redacted: Sequence[StoredBody]) -> datetime:
        if erasure.family_id in self.erasures:
            raise ValueError(f"{erasure.family_id} is already erased (primary key)")
        at = self.now()
        self.erasures[erasure.family_id] = (erasure, at)
        for b in redacted:
            self.submissions[b.submission_id].document = b.document
        return at

    async def family_member_niks(self, family_id: str) -> dict[int, str]:
        kept = [k for k in self.submissions.values() if k.received.family_id == family_id
                and k.received.kind == "interview" and k.document is not None]
        if not kept:
            return {}
        latest = max(kept, key=lambda k: (k.received.version or 0, k.received.received_at))
        return {m["line_no"]: m["nik"] for m in latest.document.get("members", []) if m.get("nik")}

    async def update_record(self, update_id: UUID) -> UpdateRecord | None:
        kept = self.submissions.get(update_id)
        if kept is None or kept.received.kind != "update":
            return None
        check = self.update_checks.get(update_id)
        return UpdateRecord(update_id, kept.received.family_id, kept.document,
                            None if check is None else check.submission_id)

    async def save_field_check(self, check: FieldCheck) -> None:
        if check.update_id in self.update_checks:
            raise ValueError("the update has a field check already (primary key)")
        self.update_checks[check.update_id] = check

    async def save_complaint(self, c: Complaint) -> None:
        self.complaints.setdefault(c.submission_id, ComplaintRecord(
            c.submission_id, c.family_id, c.sls_id, c.complainant.value, c.subject.value, c.programme, "filed",
            c.filed_at))

    async def complaint_record(self, complaint_id: UUID, *, lock: bool = True) -> ComplaintRecord | None:
        c = self.complaints.get(complaint_id)
        if c is None:
            return None
        ids = tuple(o.submission_id for o, _ in self.complaint_outcomes if o.complaint_id == complaint_id)
        return replace(c, outcome_ids=ids)

    async def save_complaint_outcome(self, o: ComplaintOutcome, status: str) -> None:
        self.complaint_outcomes.append((o, status))
        self.complaints[o.complaint_id] = replace(self.complaints[o.complaint_id], status=status)

    async def complaint_view(self, complaint_id: UUID) -> ComplaintView | None:
        record = await self.complaint_record(complaint_id, lock=False)
        if record is None:
            return None
        outcomes = []
        for o, _ in self.complaint_outcomes:
            if o.complaint_id == complaint_id:
                doc = self.submissions[o.submission_id].document or {}
                outcomes.append(RecordedOutcome(o.submission_id, o.outcome.value, o.decided_on, doc.get("reason", ""),
                                                [{"step": e.step, **e.detail} for e in self._steps_of(o.submission_id)]))
        return ComplaintView(record, outcomes)

    def _steps_of(self, submission_id: UUID) -> list[JourneyEntry]:
        return [e for e in self.steps if e.submission_id == submission_id]


def transaction_of(uow: UnitOfWork):
    """A handler's `Transaction` over a FakeUnitOfWork: the same unit of work every time, committed
    (deferred work run) at the end of each block."""

    @asynccontextmanager
    async def transaction() -> AsyncIterator[UnitOfWork]:
        yield uow
        await uow.commit()

    return transaction


class InMemoryConsultationStore:
    """intake.consultation_store.ConsultationStore on dictionaries (same public methods and signatures;
    test_intake_consultation checks it). `interviewed` holds the family ids the census interviewed."""

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.now = now
        self.forums: dict[UUID, ForumRecord] = {}
        self.decisions: dict[UUID, DecisionRecord] = {}
        self.checks: dict[tuple[UUID, str], CheckRecord] = {}
        self.interviewed: set[str] = set()

    def _counted(self, f: ForumRecord) -> ForumRecord:
        mine = [d for d in self.decisions.values() if d.forum_id == f.forum_id]
        added = [d for d in mine if d.kind is FkpDecisionKind.ADDED]
        pending = [d for d in added if (d.forum_id, d.family_id) not in self.checks]
        return replace(f, decisions=len(mine), added_families=len(added), pending_ground_checks=len(pending))

    def _decision(self, d: DecisionRecord) -> DecisionRecord:
        check = self.checks.get((d.forum_id, d.family_id))
        return replace(d, ground_check=None if check is None else check.outcome.value)

    async def forum(self, forum_id: UUID) -> ForumRecord | None:
        f = self.forums.get(forum_id)
        return None if f is None else self._counted(f)

    async def forum_for_update(self, forum_id: UUID) -> ForumRecord | None:
        return await self.forum(forum_id)

    async def opening_state(self, forum_id: UUID, village_id: str) -> tuple[ForumRecord | None, ForumRecord | None]:
        of_village = next((f for f in self.forums.values() if f.village_id == village_id), None)
        return await self.forum(forum_id), None if of_village is None else self._counted(of_village)

    async def save_forum(self, o: ForumOpening, content_hash: bytes, opened_by: str) -> ForumRecord:
        self.forums[o.forum_id] = ForumRecord(o.forum_id, o.village_id, list(o.sls_ids), o.held_on,
                                              [p.model_dump(mode="json") for p in o.participants], content_hash,
                                              opened_by, self.now())
        return self._counted(self.forums[o.forum_id])

    async def close_forum(self, forum_id: UUID, closed_by: str) -> ForumRecord:
        f = self.forums[forum_id]
        if f.closed_at is None:
            self.forums[forum_id] = replace(f, closed_at=self.now(), closed_by=closed_by)
        return self._counted(self.forums[forum_id])

    async def decision_state(self, forum_id: UUID, decision_id: UUID, family_id: str) -> DecisionState:
        forum = await self.forum(forum_id)
        if forum is None:
            return DecisionState(None)
        same_id = self.decisions.get(decision_id)
        same_family = next((d for d in self.decisions.values() if d.forum_id == forum_id and d.family_id == family_id),
                           None)
        return DecisionState(forum, same_id and self._decision(same_id), same_family and self._decision(same_family),
                             family_id in self.interviewed)

    async def save_decision(self, forum_id: UUID, d: DecisionIn, content_hash: bytes, decided_by: str) -> DecisionRecord:
        self.decisions[d.decision_id] = DecisionRecord(
            d.decision_id, forum_id, d.family_id, d.family_id[:14], d.kind,
            None if d.welfare_group is None else int(d.welfare_group), d.reason, content_hash, decided_by, self.now())
        return self._decision(self.decisions[d.decision_id])

    async def decisions_of(self, forum_id: UUID) -> list[DecisionRecord]:
        return [self._decision(d) for d in sorted(self.decisions.values(), key=lambda d: (d.decided_at, d.decision_id))
                if d.forum_id == forum_id]

    async def check_state(self, forum_id: UUID, family_id: str) -> CheckState:
        forum = await self.forum(forum_id)
        if forum is None:
            return CheckState(None)
        added = next((d for d in self.decisions.values() if d.forum_id == forum_id and d.family_id == family_id
                      and d.kind is FkpDecisionKind.ADDED), None)
        return CheckState(forum, added and self._decision(added), self.checks.get((forum_id, family_id)))

    async def save_check(self, forum_id: UUID, family_id: str, c: GroundCheckIn, content_hash: bytes,
                         checked_by: str, submission_id: UUID | None) -> CheckRecord:
        self.checks[(forum_id, family_id)] = CheckRecord(forum_id, family_id, c.outcome, c.checked_on, checked_by,
                                                         content_hash, submission_id, self.now())
        return self.checks[(forum_id, family_id)]

    async def erase_reasons(self, family_id: str) -> int:
        erased = [k for k, d in self.decisions.items() if d.family_id == family_id and d.reason]
        for k in erased:
            self.decisions[k] = replace(self.decisions[k], reason="")
        return len(erased)
