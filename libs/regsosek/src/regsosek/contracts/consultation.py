"""The village consultation as it is held (FKP, Forum Konsultasi Publik; docs/CONSULTATION.md):
one forum per village covering its SLS, its decisions by consensus per family, and the ground
check of each family the forum added.

What the events carry is what their consumers need and no more: a forum's participants as roles
and counts (no names: the village official who records it is the token's subject, which is the
accountability the minutes need); a decision's family by its id and the forum's reason (a reason
names no people, as every decision's reason); a ground-checked family's interview pseudonymised
as on interview-submitted (NIK and KK as keyed hashes, no names, address or GPS)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from regsosek.contracts.base import Contract
from regsosek.contracts.decisions import WelfareGroup
from regsosek.contracts.identifiers import FamilyId, SlsId, SubmissionId, VillageId
from regsosek.contracts.pseudonymous import InterviewSubmitted

Actor = Annotated[str, StringConstraints(min_length=1, max_length=120)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500)]
MAX_SLS_PER_FORUM = 60  # a forum covers up to ~12 SLS as held; room for large villages


class ParticipantRole(StrEnum):
    """Who takes part in a forum (the facilitator is the village head)."""

    VILLAGE_HEAD = "village_head"  # kepala desa/lurah, facilitator
    VILLAGE_STAFF = "village_staff"  # perangkat desa
    SLS_HEAD = "sls_head"  # ketua RT/SLS
    COMMUNITY_FIGURE = "community_figure"  # tokoh masyarakat, agama, perempuan
    BPS_OFFICER = "bps_officer"
    SOCIAL_AFFAIRS = "social_affairs"  # dinas sosial / TKSK
    DISTRICT_OFFICIAL = "district_official"  # kecamatan
    OTHER = "other"


class Participants(Contract):
    role: ParticipantRole
    count: Annotated[int, Field(ge=1, le=500)]


class ForumStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


def check_forum_area(village_id: str, sls_ids: list[str], participants: list[Participants]) -> None:
    """Every SLS of a forum is in its village, each listed once; each role is counted once."""
    if any(not s.startswith(village_id) for s in sls_ids):
        raise ValueError("every SLS id must be in the forum's village (start with village_id)")
    if len(set(sls_ids)) != len(sls_ids):
        raise ValueError("an SLS id is listed twice")
    roles = [p.role for p in participants]
    if len(set(roles)) != len(roles):
        raise ValueError("a participant role is listed twice: give one count per role")


class FkpForum(Contract):
    """A village's forum as recorded: opened (status open, no decisions yet) or closed (with how
    many decisions and added families it recorded). Keyed, like every event, by an SLS id: the
    forum's first SLS (`sls_id`). Classify re-ranks the forum's regency once, when the forum is
    closed and every decision it counts has arrived."""

    forum_id: SubmissionId
    village_id: VillageId
    sls_id: SlsId  # the record key: the first of `sls_ids`
    sls_ids: Annotated[list[SlsId], Field(min_length=1, max_length=MAX_SLS_PER_FORUM)]
    held_on: date
    participants: Annotated[list[Participants], Field(min_length=1, max_length=len(ParticipantRole))]
    status: ForumStatus
    decisions: Annotated[int, Field(ge=0)] = 0  # decisions recorded (added families included); at close
    added_families: Annotated[int, Field(ge=0)] = 0
    pending_ground_checks: Annotated[int, Field(ge=0)] = 0  # added families not yet checked, at close
    recorded_by: Actor
    at: datetime

    @model_validator(mode="after")
    def _in_village(self) -> FkpForum:
        check_forum_area(self.village_id, self.sls_ids, self.participants)
        if self.sls_id != self.sls_ids[0]:
            raise ValueError("sls_id (the record key) must be the first of sls_ids")
        if self.added_families > self.decisions or self.pending_ground_checks > self.added_families:
            raise ValueError("added_families cannot exceed decisions, pending_ground_checks added_families")
        return self


class FkpDecisionKind(StrEnum):
    """A forum's decision about one family, by consensus (docs/CONSULTATION.md for each effect)."""

    GROUP_CHANGE = "group_change"  # moved to another welfare group, with a reason
    CONFIRMED = "confirmed"  # the family's welfare group as shown is right
    MOVED = "moved"  # the whole family moved away: out of the ranking
    DIED = "died"  # the family head died (the family dissolved): out of the ranking
    ADDED = "added"  # a family missed by the census: registered once a ground check found it


class FkpDecisionRecorded(Contract):
    """One decision of a forum about one family. A group change carries its welfare group; no other
    decision does."""

    forum_id: SubmissionId
    decision_id: SubmissionId
    family_id: FamilyId
    sls_id: SlsId
    kind: FkpDecisionKind
    welfare_group: WelfareGroup | None = None
    reason: Reason
    decided_by: Actor
    decided_at: datetime

    @model_validator(mode="after")
    def _shape(self) -> FkpDecisionRecorded:
        if not self.family_id.startswith(self.sls_id):
            raise ValueError("family_id must belong to sls_id")
        if (self.welfare_group is not None) != (self.kind is FkpDecisionKind.GROUP_CHANGE):
            raise ValueError("welfare_group is given for a group change, and only for it")
        return self


class GroundCheckOutcome(StrEnum):
    """What an officer's ground check of an added family found: found (interviewed), not_found."""

    FOUND = "found"  # the officer found the family and interviewed it
    NOT_FOUND = "not_found"  # no such family at the place the forum gave: the addition lapses


class FkpGroundChecked(Contract):
    """An officer's ground check of a family a forum added. Found: the interview (pseudonymised),
    which verify decides as a family added to its SLS (verified_added) and classify then classifies
    like any other; not found: no interview, the addition lapses."""

    forum_id: SubmissionId
    family_id: FamilyId
    sls_id: SlsId
    outcome: GroundCheckOutcome
    checked_on: date
    checked_by: Actor
    checked_at: datetime
    interview: InterviewSubmitted | None = None

    @model_validator(mode="after")
    def _shape(self) -> FkpGroundChecked:
        if (self.interview is not None) != (self.outcome is GroundCheckOutcome.FOUND):
            raise ValueError("an interview comes with a found family, and only with it")
        if self.interview is not None and self.interview.family_id != self.family_id:
            raise ValueError("the interview must be of the checked family")
        if not self.family_id.startswith(self.sls_id):
            raise ValueError("family_id must belong to sls_id")
        return self
