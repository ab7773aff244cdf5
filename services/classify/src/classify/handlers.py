"""Classify's handlers: verified interviews and FKP adjustments in; family
classifications and programme eligibility out."""

from __future__ import annotations

from regsosek.contracts import FamilyInterview, FkpAdjustment, InterviewFlagged, InterviewVerified, WelfareGroup
from regsosek.messaging import Incoming, UnitOfWork

from classify import store
from classify.domain import VerifyDecision, is_family_decision, supersedes
from classify.model import PmtModel, PovertyLines, RuleSet
from classify.store import Config


class Classifier:
    def __init__(self, model: PmtModel, lines: PovertyLines, rules: RuleSet) -> None:
        self.model, self.lines, self.rules = model, lines, rules
        self.config = Config(model, lines, rules)

    async def apply(self, uow: UnitOfWork, iv: FamilyInterview) -> None:
        """Classify one family as it arrives: its decile is provisional (see ranking.py)."""
        fkp = (await store.fkp_groups(uow.conn, [iv.family_id])).get(iv.family_id)
        seq = (await store.next_decision_seqs(uow.conn, [iv.family_id]))[iv.family_id]
        await self._classify(uow, iv, fkp, seq)

    async def _classify(self, uow: UnitOfWork, iv: FamilyInterview, fkp: WelfareGroup | None, seq: int) -> None:
        conn = uow.conn
        key = ("placement", iv.location.sls_id[:2])  # the latest ranking of the province, read once per batch
        if key not in uow.cache:
            uow.cache[key] = await store.placement_for(conn, iv.location.sls_id, self.model)
        placement = uow.cache[key]
        c = self.config.classify(iv, fkp, placement)
        await store.save(conn, iv, c, self.config, placement.ranking_id)
        store.publish(uow.outbox, iv, c, self.config, seq)

    async def on_verified(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Classify the family, unless a newer decision of verify's was applied already (a flag
        that arrived first, on its own topic, or a later verification): verify's decision
        sequence decides, never the order of arrival (docs/ORDERING.md)."""
        e: InterviewVerified = msg.data
        incoming = VerifyDecision(e.decision_seq, e.interview.version, e.verified_at, verified=True)
        cur = await store.classified_for_update(uow.conn, e.family_id)
        if not supersedes(incoming, await store.verify_order(uow.conn, e.family_id)):
            return  # stale: a newer verification or flag of this family was applied
        seq = await store.record_verify_decision(uow.conn, e.family_id, incoming, publishes=True)
        await self._classify(uow, e.interview, WelfareGroup(cur["fkp"]) if cur["fkp"] else None, seq)

    async def on_flagged(self, uow: UnitOfWork, msg: Incoming) -> None:
        """The family is no longer (or not yet) verified: a classified family's eligibility is
        withdrawn; a family not classified keeps the flag, so the verification it withdraws,
        should it arrive later, is stale. An older flag changes nothing."""
        e: InterviewFlagged = msg.data
        if not is_family_decision(e.reason):
            return  # a duplicate interview: the family's verification is unchanged
        incoming = VerifyDecision(e.decision_seq, e.version, e.flagged_at, verified=False)
        await store.classified_for_update(uow.conn, e.family_id)
        if not supersedes(incoming, await store.verify_order(uow.conn, e.family_id)):
            return  # stale: a newer decision of verify's was applied
        row = await store.withdraw(uow.conn, e)
        seq = await store.record_verify_decision(uow.conn, e.family_id, incoming, publishes=row is not None)
        if row is not None:
            store.publish_withdrawal(uow.outbox, row, e, self.config, seq)

    async def on_fkp(self, uow: UnitOfWork, msg: Incoming) -> None:
        a: FkpAdjustment = msg.data
        await uow.conn.execute(
            "insert into fkp_adjustments (submission_id, family_id, welfare_group, reason, decided_by, decided_at) "
            "values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
            a.submission_id, a.family_id, int(a.welfare_group), a.reason, a.decided_by, a.decided_at,
        )
        row = await uow.conn.fetchrow("select interview from families where family_id = $1 for update", a.family_id)
        if row is not None:  # otherwise it applies when the family is classified
            await self.apply(uow, FamilyInterview.model_validate(row["interview"]))
        # The family's new rank moves others: its regency is re-ranked in the background.
        await store.mark_area(uow.conn, a.sls_id[:4], f"fkp {a.submission_id}")

    def handlers(self) -> dict:
        return {InterviewVerified: self.on_verified, InterviewFlagged: self.on_flagged, FkpAdjustment: self.on_fkp}
