"""The village consultation (FKP, Forum Konsultasi Publik) as intake records it, pure logic
(docs/CONSULTATION.md): one forum per village covering its SLS, opened with its date and
participants, its decisions by consensus per family, the families it added and their ground
checks, then closed. Each request is decided here on what the store loaded for it: new (store
and publish), a repeat of what was recorded (the same answer again), or refused (404, 409 or
422 with every problem by JSON pointer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field

from intake import domain
from intake.domain import Decision, IntakeState, Invalid, Problem, Submission, content_hash, text_problems
from regsosek.contracts import FamilyInterview, FkpDecisionKind, GroundCheckOutcome, Participants, WelfareGroup
from regsosek.contracts.consultation import MAX_SLS_PER_FORUM, Reason
from regsosek.contracts.identifiers import FamilyId, SlsId, VillageId

# ---------------------------------------------------------------- what the village official and the officer send


class ForumOpening(BaseModel):
    """Opening a village's forum: its SLS, the day it is held and who takes part (roles and counts)."""

    forum_id: UUID = Field(description="Chosen by the client; opening again with the same content is a repeat")
    village_id: VillageId
    sls_ids: list[SlsId] = Field(min_length=1, max_length=MAX_SLS_PER_FORUM,
                                 description="The village's SLS the forum covers")
    held_on: date
    participants: list[Participants] = Field(min_length=1, max_length=8, description="One count per role, no names")


class DecisionIn(BaseModel):
    """A decision by consensus about one family; `added` registers a family missed by the census
    under the building and family serials the forum gives it (no name: the SLS head, who was at the
    forum, shows the officer the way)."""

    decision_id: UUID = Field(description="Chosen by the client; recording again with the same content is a repeat")
    family_id: FamilyId
    kind: FkpDecisionKind
    welfare_group: WelfareGroup | None = Field(None, description="The new group, for a group change only: "
                                               "1 sangat miskin, 2 miskin, 3 rentan miskin, 4 tidak miskin")
    reason: Reason = Field(description="The forum's reason, as in its minutes; no names")


class GroundCheckIn(BaseModel):
    """An officer's ground check of a family the forum added: found (with its interview, form
    REGSOSEK22-K) or not found."""

    outcome: GroundCheckOutcome
    checked_on: date
    interview: FamilyInterview | None = Field(None, description="The added family's interview, when found")


# ---------------------------------------------------------------- what intake keeps


@dataclass(frozen=True)
class ForumRecord:
    """A forum as stored, with the counts of what it recorded (`decisions` includes added families)."""

    forum_id: UUID
    village_id: str
    sls_ids: list[str]
    held_on: date
    participants: list[dict]
    content_hash: bytes
    opened_by: str
    opened_at: datetime
    closed_at: datetime | None = None
    closed_by: str | None = None
    decisions: int = 0
    added_families: int = 0
    pending_ground_checks: int = 0

    @property
    def closed(self) -> bool:
        return self.closed_at is not None


@dataclass(frozen=True)
class DecisionRecord:
    decision_id: UUID
    forum_id: UUID
    family_id: str
    sls_id: str
    kind: FkpDecisionKind
    welfare_group: int | None
    reason: str
    content_hash: bytes
    decided_by: str
    decided_at: datetime
    ground_check: str | None = None  # an added family's check outcome; None while pending


@dataclass(frozen=True)
class CheckRecord:
    forum_id: UUID
    family_id: str
    outcome: GroundCheckOutcome
    checked_on: date
    checked_by: str
    content_hash: bytes
    submission_id: UUID | None
    checked_at: datetime


@dataclass(frozen=True)
class DecisionState:
    """What recording a decision needs: its forum, a decision stored under its id, the forum's
    decision about the same family, and whether the census interviewed a family of that id."""

    forum: ForumRecord | None
    same_id: DecisionRecord | None = None
    same_family: DecisionRecord | None = None
    interviewed: bool = False


@dataclass(frozen=True)
class CheckState:
    forum: ForumRecord | None
    added: DecisionRecord | None = None  # the forum's `added` decision about the family
    earlier: CheckRecord | None = None


class Verdict(StrEnum):
    NEW = "new"
    REPEAT = "repeat"


@dataclass(frozen=True)
class Refused:
    """404 (no such forum or added family) or 409 (in conflict with what is recorded), with the reason."""

    status: int
    reason: str


@dataclass(frozen=True)
class Decided:
    """NEW: store it and publish; REPEAT: answer with what was recorded (`earlier`). A new ground check
    of a found family carries its interview, to store as an interview submission (`interview`)."""

    verdict: Verdict
    content_hash: bytes = b""
    earlier: object | None = None
    interview: Submission | None = None


NO_FORUM = Refused(404, "no such forum")


def _hash(model: BaseModel, **context) -> bytes:
    return content_hash({**model.model_dump(mode="json"), **{k: str(v) for k, v in context.items()}})


# ---------------------------------------------------------------- opening and closing


def opening_problems(o: ForumOpening) -> list[Problem]:
    """The forum's SLS are in its village, each once; each participant role once."""
    problems = [Problem(f"/sls_ids/{i}", "not in the forum's village (must start with village_id)")
                for i, s in enumerate(o.sls_ids) if not s.startswith(o.village_id)]
    problems += [Problem(f"/sls_ids/{i}", "listed twice") for i, s in enumerate(o.sls_ids) if s in o.sls_ids[:i]]
    roles = [p.role for p in o.participants]
    problems += [Problem(f"/participants/{i}/role", "one count per role: this role is listed twice")
                 for i, r in enumerate(roles) if r in roles[:i]]
    return problems + text_problems(o.model_dump(mode="json"))


def decide_opening(o: ForumOpening, same_id: ForumRecord | None, of_village: ForumRecord | None) -> Decided | Refused | Invalid:
    """A new forum, or the same opening again; one forum per village."""
    if problems := opening_problems(o):
        return Invalid(problems)
    digest = _hash(o)
    if same_id is not None:
        if same_id.content_hash != digest:
            return Refused(409, "forum_id already used for a different opening")
        return Decided(Verdict.REPEAT, digest, same_id)
    if of_village is not None:
        return Refused(409, "the village has its forum already: one forum per village")
    return Decided(Verdict.NEW, digest)


def decide_close(forum: ForumRecord | None) -> Decided | Refused:
    """Closing is once; closing a closed forum again answers with the close recorded. Added families
    still waiting for their ground check do not hold the close: they count once checked (see
    docs/CONSULTATION.md)."""
    if forum is None:
        return NO_FORUM
    return Decided(Verdict.REPEAT if forum.closed else Verdict.NEW, earlier=forum)


# ---------------------------------------------------------------- decisions


def decision_problems(d: DecisionIn, forum: ForumRecord, interviewed: bool) -> list[Problem]:
    problems = []
    if d.family_id[:14] not in forum.sls_ids:
        problems.append(Problem("/family_id", "the family's SLS is not one of the forum's SLS"))
    if (d.welfare_group is not None) != (d.kind is FkpDecisionKind.GROUP_CHANGE):
        problems.append(Problem("/welfare_group", "required for a group change, and only for it"))
    if d.kind is FkpDecisionKind.ADDED and interviewed:
        problems.append(Problem("/family_id", "a family of this id was interviewed in the census: it is not a "
                                              "missed family; record a decision about it, or give the added "
                                              "family a building and family serial of its own"))
    return problems + text_problems(d.model_dump(mode="json"))


def decide_decision(d: DecisionIn, state: DecisionState) -> Decided | Refused | Invalid:
    """A decision of an open forum about a family of its SLS, one per family per forum; the same
    decision again is a repeat (also once the forum is closed)."""
    forum = state.forum
    if forum is None:
        return NO_FORUM
    digest = _hash(d, forum_id=forum.forum_id)
    if state.same_id is not None:
        if state.same_id.content_hash != digest:
            return Refused(409, "decision_id already used for different content")
        return Decided(Verdict.REPEAT, digest, state.same_id)
    if forum.closed:
        return Refused(409, "the forum is closed: it records no more decisions")
    if problems := decision_problems(d, forum, state.interviewed):
        return Invalid(problems)
    if state.same_family is not None:
        return Refused(409, "the forum decided about this family already: one decision per family per forum")
    return Decided(Verdict.NEW, digest)


# ---------------------------------------------------------------- ground checks of added families


def check_problems(c: GroundCheckIn, family_id: str, forum: ForumRecord) -> list[Problem]:
    problems = []
    if c.checked_on < forum.held_on:
        problems.append(Problem("/checked_on", "before the forum was held"))
    if c.outcome is GroundCheckOutcome.FOUND and c.interview is None:
        problems.append(Problem("/interview", "a found family's interview is required"))
    if c.outcome is GroundCheckOutcome.NOT_FOUND and c.interview is not None:
        problems.append(Problem("/interview", "no interview of a family not found"))
    if c.interview is not None:
        if c.interview.family_id != family_id:
            problems.append(Problem("/interview/location", "the interview's SLS, building and family serials must be "
                                                           "those the forum gave the added family"))
        if c.interview.interviewed_at.date() != c.checked_on:
            problems.append(Problem("/interview/interviewed_at", "must be on checked_on, the day of the ground check"))
    return problems


def found_interview(c: GroundCheckIn, actor: str) -> Submission | Invalid | None:
    """A found family's interview, checked as every interview is (before anything is loaded). Its date
    is the ground check's rule, not the census window: on the day of the check, on or after the forum
    (check_problems)."""
    if c.interview is None:
        return None
    return domain.checked_submission(c.interview, actor, collection=(date.min, date.max))


def decide_ground_check(c: GroundCheckIn, family_id: str, state: CheckState, interview: Submission | Invalid | None,
                        submissions: IntakeState) -> Decided | Refused | Invalid:
    """The one ground check of a family the forum added (also after the forum closed); the same
    check again is a repeat. A found family's interview (`found_interview`) is decided as any
    submission is on what intake holds (`submissions`): an erased family's is refused (410), a
    submission id used before too (409: a ground check brings a new interview)."""
    if state.forum is None:
        return NO_FORUM
    if state.added is None:
        return Refused(404, "the forum added no family of this id")
    digest = _hash(c, family_id=family_id)
    if state.earlier is not None:
        if state.earlier.content_hash != digest:
            return Refused(409, "this family's ground check is recorded already, with other content")
        return Decided(Verdict.REPEAT, digest, state.earlier)
    if problems := check_problems(c, family_id, state.forum):
        return Invalid(problems)
    if isinstance(interview, Invalid):
        return Invalid(prefixed(interview.problems, "/interview"))
    if interview is None:
        return Decided(Verdict.NEW, digest)
    (outcome,) = domain.decide_submissions([interview], submissions)
    if outcome.decision is Decision.ERASED:
        return Refused(410, "this family's identifiers were erased; its submissions are no longer accepted")
    if outcome.decision is not Decision.NEW:
        return INTERVIEW_ID_USED
    return Decided(Verdict.NEW, digest, interview=outcome.submission)


INTERVIEW_ID_USED = Refused(409, "the interview's submission_id was used before: a ground check brings a new interview")


def prefixed(problems: list[Problem], prefix: str) -> list[Problem]:
    return [Problem(prefix + p.path, p.reason) for p in problems]


# ---------------------------------------------------------------- answers


def forum_out(f: ForumRecord) -> dict:
    return {"forum_id": str(f.forum_id), "village_id": f.village_id, "sls_ids": f.sls_ids,
            "held_on": f.held_on.isoformat(), "participants": f.participants,
            "status": "closed" if f.closed else "open", "opened_by": f.opened_by,
            "opened_at": f.opened_at.isoformat(), "closed_at": f.closed_at.isoformat() if f.closed_at else None,
            "decisions": f.decisions, "added_families": f.added_families,
            "pending_ground_checks": f.pending_ground_checks}


def decision_out(d: DecisionRecord) -> dict:
    out = {"decision_id": str(d.decision_id), "forum_id": str(d.forum_id), "family_id": d.family_id,
           "sls_id": d.sls_id, "kind": d.kind.value, "welfare_group": d.welfare_group, "reason": d.reason,
           "decided_by": d.decided_by, "decided_at": d.decided_at.isoformat()}
    if d.kind is FkpDecisionKind.ADDED:
        out["ground_check"] = d.ground_check or "pending"
    return out


def check_out(c: CheckRecord) -> dict:
    return {"forum_id": str(c.forum_id), "family_id": c.family_id, "outcome": c.outcome.value,
            "checked_on": c.checked_on.isoformat(), "checked_by": c.checked_by,
            "submission_id": str(c.submission_id) if c.submission_id else None, "checked_at": c.checked_at.isoformat()}
