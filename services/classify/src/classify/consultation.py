"""A village consultation's decisions and its close, as classify applies them (FKP;
docs/CONSULTATION.md), pure logic:

- group change: kept like any FKP adjustment; a classified family is classified again within the
  group the forum set (domain.decide_fkp), and keeps it until a later consultation decision;
- confirmed: the family's classification stands; nothing is published;
- moved (the whole family moved away) and died (the family head died, the family dissolved): the
  family leaves the ranking: every programme not eligible, with the forum's reason; a newer
  verification of the family (a new interview) brings it back, as after any withdrawal;
- added: nothing until the ground check found the family, which is then classified like any
  verified family.

The forum's regency is re-ranked once per forum: when the forum is closed and every decision it
counts has been applied, whichever of the two arrives last (the close and the decisions travel
on different topics and keys), never per decision.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from classify.domain import Config, Decision, FamilyState, ProgrammeOutcome, Withdrawal, decide_fkp
from classify.ranking import Placement
from regsosek.contracts import (
    FkpAdjustment,
    FkpDecisionKind,
    FkpDecisionRecorded,
    FlagReason,
    InterviewFlagged,
)
from regsosek.contracts import details as dt

# a removal is told downstream as the withdrawal of the family's verification, with the flag reason
# the RT head's word would have carried at the census
REMOVALS = {
    FkpDecisionKind.MOVED: (FlagReason.ROSTER_SAYS_MOVED, dt.FKP_FAMILY_MOVED()),
    FkpDecisionKind.DIED: (FlagReason.ROSTER_SAYS_DISSOLVED, dt.FKP_FAMILY_DIED()),
}


@dataclass(frozen=True)
class ForumTally:
    """What classify knows of one forum: its regency, how many decisions its close counts (None
    while open), how many it applied, whether this decision was applied before (a redelivery), and
    whether its regency's re-rank was asked for."""

    forum_id: str
    regency: str
    expected: int | None
    applied: int
    counted: bool = False
    rerank_asked: bool = False

    @property
    def rerank_due(self) -> bool:
        return self.expected is not None and self.applied >= self.expected and not self.rerank_asked


def _rerank(t: ForumTally) -> tuple[ForumTally, tuple[str, str] | None]:
    if not t.rerank_due:
        return t, None
    return replace(t, rerank_asked=True), (t.regency, f"fkp forum {t.forum_id} closed")


def adjustment_of(e: FkpDecisionRecorded) -> FkpAdjustment:
    """A group change as the FKP adjustment classify keeps (the latest per family applies)."""
    assert e.welfare_group is not None
    return FkpAdjustment(submission_id=e.decision_id, family_id=e.family_id, sls_id=e.sls_id,
                         welfare_group=e.welfare_group, reason=e.reason, decided_by=e.decided_by,
                         decided_at=e.decided_at)


def removal(cfg: Config, state: FamilyState, e: FkpDecisionRecorded) -> Decision:
    """A moved or died family out of the ranking: the withdrawal of its classification."""
    if state.classified is None or state.profile is None:
        return Decision(ignored="not classified: nothing to take out of the ranking")
    flag_reason, detail = REMOVALS[e.kind]
    flag = InterviewFlagged(family_id=e.family_id, sls_id=e.sls_id, submission_id=state.profile.submission_id,
                            version=state.profile.version, reason=flag_reason, detail=detail,
                            flagged_at=e.decided_at)
    reason = f"out of the ranking: {detail} ({e.reason})"[:500]
    decisions = [ProgrammeOutcome(r.programme, False, cfg.rules.version, [reason]) for r in cfg.rules.rules]
    return Decision(withdrawal=Withdrawal(flag, state.classified, decisions))


def decide_forum_decision(cfg: Config, state: FamilyState, tally: ForumTally, e: FkpDecisionRecorded,
                          placement: Placement) -> tuple[Decision, ForumTally, tuple[str, str] | None]:
    """One forum decision applied (see the module docstring for each kind), the forum's tally after
    it (the decision counted once) and the regency to re-rank (with why) when it was the last one a
    closed forum counts."""
    if e.kind is FkpDecisionKind.GROUP_CHANGE:
        d = replace(decide_fkp(cfg, state, adjustment_of(e), placement), rerank_area=None)
    elif e.kind in REMOVALS and not state.erased:
        d = removal(cfg, state, e)
    else:
        d = Decision(ignored=f"{e.kind.value}: nothing to change in the family's classification")
    after, area = _rerank(tally if tally.counted else replace(tally, applied=tally.applied + 1, counted=True))
    return d, after, area


def decide_forum_close(tally: ForumTally, decisions: int) -> tuple[ForumTally, tuple[str, str] | None]:
    """The forum closed counting `decisions`: its regency's re-rank is asked for now if every one
    was applied already, else by the last of them to arrive."""
    return _rerank(replace(tally, expected=decisions))
