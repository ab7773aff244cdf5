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
