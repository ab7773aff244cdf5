"""Classify's handlers: verified families (their HouseholdProfile) and FKP adjustments in;
family classifications and programme eligibility out."""

from __future__ import annotations

from classify import store
from classify.domain import VerifyDecision, is_family_decision, supersedes
from classify.model import PmtModel, PovertyLines, RuleSet
from classify.store import Config
from regsosek import audit
from regsosek.contracts import (
    FamilyErased,
    FkpAdjustment,
    HouseholdProfile,
    InterviewFlagged,
    InterviewVerified,
    InterviewVerifiedV1,
    WelfareGroup,
)
from regsosek.messaging import Incoming, UnitOfWork


class Classifier:
    def __init__(self, model: PmtModel, lines: PovertyLines, rules: RuleSet) -> None:
        self.model, self.lines, self.rules = model, lines, rules
        self.config = Config(model, lines, rules)

    async def apply(self, uow: UnitOfWork, p: HouseholdProfile) -> None:
        """Classify one family as it arrives: its decile is provisional (see ranking.py)."""
        fkp = (await store.fkp_groups(uow.conn, [p.family_id])).get(p.family_id)
        seq = (await store.next_decision_seqs(uow.conn, [p.family_id]))[p.family_id]
        await self._classify(uow, p, fkp, seq)

    async def _classify(self, uow: UnitOfWork, p: HouseholdProfile, fkp: WelfareGroup | None, seq: int) -> None:
        conn = uow.conn
        key = ("placement", p.sls_id[:2])  # the latest ranking of the province, read once per batch
        if key not in uow.cache:
            uow.cache[key] = await store.placement_for(conn, p.sls_id, self.model)
        placement = uow.cache[key]
        c = self.config.classify(p, fkp, placement)
        await store.save(conn, p, c, self.config, placement.ranking_id)
        store.publish(uow.outbox, p, c, self.config, seq)

    async def on_verified(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Classify the family, unless a newer decision of verify's was applied already (a flag
        that arrived first, on its own topic, or a later verification): verify's decision
        sequence decides, never the order of arrival (docs/ORDERING.md)."""
        await self._verified(uow, msg.data)

    async def on_verified_v1(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A v1 record (the whole interview; still on the topic after the rollout, or a re-driven
        dead letter): reduced to its profile at once, and only that is used and kept."""
        e: InterviewVerifiedV1 = msg.data
        await self._verified(uow, e.upgraded())

    async def _verified(self, uow: UnitOfWork, e: InterviewVerified) -> None:
        incoming = VerifyDecision(e.decision_seq, e.profile.version, e.verified_at, verified=True)
        cur = await store.classified_for_update(uow.conn, e.family_id)
        if await store.is_erased(uow.conn, e.family_id):
            return  # erased: a verification retained or re-driven from before does not classify it again
        if not supersedes(incoming, await store.verify_order(uow.conn, e.family_id)):
            return  # stale: a newer verification or flag of this family was applied
        seq = await store.record_verify_decision(uow.conn, e.family_id, incoming, publishes=True)
        await self._classify(uow, e.profile, WelfareGroup(cur["fkp"]) if cur["fkp"] else None, seq)

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
        if await store.is_erased(uow.conn, a.family_id):
            return  # erased: nothing is kept of it any more
        await store.save_fkp(uow.conn, a)
        profile = await store.profile_for_update(uow.conn, a.family_id)
        if profile is not None:  # otherwise it applies when the family is classified
            await self.apply(uow, profile)
        # The family's new rank moves others: its regency is re-ranked in the background.
        await store.mark_area(uow.conn, a.sls_id[:4], f"fkp {a.submission_id}")

    async def on_erased(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Erasure: the family's profile, classification, withdrawal and FKP decisions are deleted
        (the decisions already published stay on their topics for their retention; intake keeps
        the journey by ids); that it was erased is kept, and audited (ids and counts only)."""
        e: FamilyErased = msg.data
        await store.classified_for_update(uow.conn, e.family_id)  # the row lock re-rank and replay take
        counts = await store.erase_family(uow.conn, e)
        await audit.record(uow.conn, audit.entry(
            "intake", "service", "family.erase", "family", e.family_id, request_id=msg.envelope.id,
            detail={"erasure_id": str(e.erasure_id), "reason": e.reason.value, **counts}))

    def handlers(self) -> dict:
        return {InterviewVerified: self.on_verified, InterviewVerifiedV1: self.on_verified_v1,
                InterviewFlagged: self.on_flagged, FkpAdjustment: self.on_fkp, FamilyErased: self.on_erased}
