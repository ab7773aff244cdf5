"""The village consultation (FKP; docs/CONSULTATION.md) in the console's read model, pure: a
village's forum (date, SLS, participants as roles and counts, open or closed) and its decisions,
each added family with its ground check. Ids, kinds, groups, the forum's reasons and dates only:
the ground check's interview is not kept (the console never holds answers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from regsosek.contracts import FkpDecisionKind, FkpDecisionRecorded, FkpForum, FkpGroundChecked, ForumStatus


@dataclass(frozen=True)
class ForumRow:
    forum_id: str
    village_id: str
    sls_ids: tuple[str, ...]
    held_on: date
    participants: tuple[tuple[str, int], ...]  # (role, count)
    status: str
    decisions: int
    added_families: int
    at: datetime


@dataclass(frozen=True)
class DecisionRow:
    decision_id: str
    forum_id: str
    family_id: str
    sls_id: str
    kind: str
    welfare_group: int | None
    reason: str
    decided_at: datetime
    ground_check: str | None = None  # an added family: found / not_found, None while pending


@dataclass(frozen=True)
class CheckRow:
    forum_id: str
    family_id: str
    outcome: str
    checked_on: date


@dataclass(frozen=True)
class ForumView:
    """A forum as the village page shows it, with its decisions in the order they were taken."""

    forum: ForumRow
    decisions: list[DecisionRow] = field(default_factory=list)

    @property
    def participants_total(self) -> int:
        return sum(n for _, n in self.forum.participants)

    @property
    def pending_ground_checks(self) -> int:
        return sum(1 for d in self.decisions if d.kind == FkpDecisionKind.ADDED.value and d.ground_check is None)


def forum_row(e: FkpForum) -> ForumRow:
    return ForumRow(str(e.forum_id), e.village_id, tuple(e.sls_ids), e.held_on,
                    tuple((p.role.value, p.count) for p in e.participants), e.status.value, e.decisions,
                    e.added_families, e.at)


def newer_forum(stored: ForumRow | None, incoming: ForumRow) -> bool:
    """A closed forum stays closed (its open event, should it come again, changes nothing)."""
    return stored is None or stored.status != ForumStatus.CLOSED.value or incoming.status == ForumStatus.CLOSED.value


def decision_row(e: FkpDecisionRecorded) -> DecisionRow:
    return DecisionRow(str(e.decision_id), str(e.forum_id), e.family_id, e.sls_id, e.kind.value,
                       None if e.welfare_group is None else int(e.welfare_group), e.reason, e.decided_at)


def check_row(e: FkpGroundChecked) -> CheckRow:
    return CheckRow(str(e.forum_id), e.family_id, e.outcome.value, e.checked_on)
