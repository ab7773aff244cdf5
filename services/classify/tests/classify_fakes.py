"""An in-memory stand-in for classify's handler store, for fast unit tests of the handlers'
logic (with regsosek.testing.FakeUnitOfWork). Same public methods and signatures as
`classify.store.ClassifyStore` (test_classify_fakes.py checks it), state kept in plain dicts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from classify.consultation import ForumTally
from classify.domain import (
    Classification,
    Classified,
    Config,
    FamilyState,
    FkpDecision,
    VerifyDecision,
    Withdrawal,
)
from classify.model import PmtModel
from classify.ranking import Placement, reference_placement
from regsosek import audit
from regsosek.contracts import FamilyErased, FkpAdjustment, FkpDecisionRecorded, HouseholdProfile


@dataclass
class Row:
    """A family's classification row."""

    profile: HouseholdProfile
    classification: Classification
    versions: tuple[str, str, str]
    ranking_id: int | None


@dataclass
class Order:
    verify: VerifyDecision | None = None
    decision_seq: int = 0


class InMemoryClassifyStore:
    def __init__(self, placement: Placement | None = None) -> None:
        self.families: dict[str, Row] = {}
        self.order: dict[str, Order] = {}
        self.withdrawals: dict[str, Withdrawal] = {}
        self.fkp: list[FkpAdjustment] = []  # in arrival order
        self.erased: dict[str, FamilyErased] = {}
        self.areas: dict[str, str] = {}
        self.audit: list[audit.Entry] = []
        self.placement = placement  # the latest ranking's placement (None: the model's reference)
        self.preloaded: dict[str, FamilyState] = {}  # preload_verification_states, each taken once
        self.flushes = 0  # writes are made at once here; `flush` only counts
        self.forums: dict[str, ForumTally] = {}  # forum id -> tally (counted: False)
        self.forum_decisions: dict[str, tuple[str, str]] = {}  # decision id -> (forum id, kind)

    def _latest_fkp(self, family_id: str) -> FkpDecision | None:
        kept = [(a.decided_at, i, a) for i, a in enumerate(self.fkp) if a.family_id == family_id]
        if not kept:
            return None
        a = max(kept, key=lambda t: (t[0], t[1]))[2]
        return FkpDecision(str(a.submission_id), a.welfare_group, a.decided_at)

    async def preload_verification_states(self, family_ids: Sequence[str]) -> None:
        for family_id in family_ids:
            self.preloaded[family_id] = self._state_for_verification(family_id)

    async def state_for_verification(self, family_id: str) -> FamilyState:
        preloaded = self.preloaded.pop(family_id, None)
        return preloaded if preloaded is not None else self._state_for_verification(family_id)

    def _state_for_verification(self, family_id: str) -> FamilyState:
        if family_id in self.erased:
            return FamilyState(family_id, erased=True)
        return FamilyState(family_id, fkp=self._latest_fkp(family_id),
                           order=self.order.setdefault(family_id, Order()).verify)

    async def state_for_flag(self, family_id: str) -> FamilyState:
        row = self.families.get(family_id)
        classified = None if row is None else Classified(row.profile.sls_id, row.classification.welfare_group,
                                                          row.classification.decile)
        return FamilyState(family_id, classified=classified, order=self.order.setdefault(family_id, Order()).verify)

    async def state_for_fkp(self, family_id: str, submission_id: str) -> FamilyState:
        if family_id in self.erased:
            return FamilyState(family_id, erased=True)
        row = self.families.get(family_id)
        return FamilyState(family_id, profile=None if row is None else row.profile, fkp=self._latest_fkp(family_id),
                           fkp_kept=any(str(a.submission_id) == submission_id for a in self.fkp))

    async def state_for_forum_decision(self, family_id: str, decision_id: str) -> FamilyState:
        if family_id in self.erased:
            return FamilyState(family_id, erased=True)
        row = self.families.get(family_id)
        kept = any(str(a.submission_id) == decision_id for a in self.fkp)
        if row is None:
            return FamilyState(family_id, fkp=self._latest_fkp(family_id), fkp_kept=kept)
        c = row.classification
        return FamilyState(family_id, classified=Classified(row.profile.sls_id, c.welfare_group, c.decile),
                           profile=row.profile, fkp=self._latest_fkp(family_id), fkp_kept=kept)

    async def forum_tally(self, forum_id: str, regency: str, decision_id: str | None) -> ForumTally:
        t = self.forums.setdefault(forum_id, ForumTally(forum_id, regency, None, 0))
        applied = sum(f == forum_id for f, _ in self.forum_decisions.values())
        return ForumTally(forum_id, t.regency, t.expected, applied, decision_id in self.forum_decisions, t.rerank_asked)

    async def save_forum_tally(self, t: ForumTally, decision: FkpDecisionRecorded | None) -> None:
        if decision is not None:
            self.forum_decisions.setdefault(str(decision.decision_id), (str(decision.forum_id), decision.kind.value))
        old = self.forums[t.forum_id]
        self.forums[t.forum_id] = ForumTally(t.forum_id, old.regency, t.expected, 0, False, t.rerank_asked)

    async def placement_for(self, sls_id: str, model: PmtModel) -> Placement:
        return self.placement or reference_placement(model.version, model.decile_cutpoints)

    async def record_verify_decision(self, family_id: str, d: VerifyDecision, *, publishes: bool) -> int:
        if d.verified:
            self.withdrawals.pop(family_id, None)
        o = self.order.setdefault(family_id, Order())
        o.verify = d
        o.decision_seq += 1 if publishes else 0
        return o.decision_seq

    async def next_decision_seqs(self, family_ids: Sequence[str]) -> dict[str, int]:
        out = {}
        for fid in family_ids:
            o = self.order.setdefault(fid, Order())
            o.decision_seq += 1
            out[fid] = o.decision_seq
        return out

    async def save_classification(self, p: HouseholdProfile, c: Classification, cfg: Config,
                                  ranking_id: int | None) -> None:
        self.families[p.family_id] = Row(p, c, cfg.versions, ranking_id)

    async def flush(self) -> None:
        self.flushes += 1

    async def withdraw(self, w: Withdrawal) -> None:
        del self.families[w.flag.family_id]
        self.withdrawals[w.flag.family_id] = w

    async def keep_fkp(self, a: FkpAdjustment) -> None:
        if all(k.submission_id != a.submission_id for k in self.fkp):
            self.fkp.append(a)

    async def mark_area(self, regency: str, reason: str) -> None:
        self.areas[regency] = reason

    async def erase_family(self, e: FamilyErased) -> dict[str, int]:
        counts = {"families": int(self.families.pop(e.family_id, None) is not None),
                  "withdrawals": int(self.withdrawals.pop(e.family_id, None) is not None),
                  "fkp_adjustments": sum(a.family_id == e.family_id for a in self.fkp)}
        self.fkp = [a for a in self.fkp if a.family_id != e.family_id]
        self.erased.setdefault(e.family_id, e)
        return counts

    async def record_audit(self, entry: audit.Entry) -> None:
        self.audit.append(entry)


class InMemoryStatusStore:
    """The status API's store (classify.store.StatusStore) over plain lists: same public methods and signatures."""

    def __init__(self) -> None:
        self.versions: list[dict] = []
        self.rankings: list[dict] = []  # oldest first, as inserted
        self.areas: list[dict] = []
        self.replays: list[dict] = []  # oldest first
        self.reranks: list[dict] = []  # oldest first
        self.requests: list[dict] = []  # oldest first
        self.running = False

    async def families_by_versions(self) -> list[dict]:
        return sorted(self.versions, key=lambda r: -r["families"])

    async def recent_rankings(self, limit: int) -> list[dict]:
        return list(reversed(self.rankings))[:limit]

    async def areas_waiting(self) -> list[dict]:
        return sorted(self.areas, key=lambda r: r["requested_at"])

    async def recent_replays(self, limit: int) -> list[dict]:
        return list(reversed(self.replays))[:limit]

    async def recent_reranks(self, limit: int) -> list[dict]:
        return list(reversed(self.reranks))[:limit]

    async def reranks_waiting(self) -> list[dict]:
        return [r for r in self.requests if r.get("done_at") is None]

    async def request_rerank(self, scope: str, requested_by: str) -> int:
        self.requests.append({"id": len(self.requests) + 1, "scope": scope, "reason": "request",
                              "requested_by": requested_by, "requested_at": datetime.now(UTC)})
        return len(self.requests)

    async def rerank_running(self) -> bool:
        return self.running
