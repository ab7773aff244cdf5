"""Classify's handlers: verified families (their HouseholdProfile), flags, FKP adjustments and
erasures in; family classifications and programme eligibility out. Each handler loads the
family's state once (store), lets the domain decide in one call, saves (store) and publishes
(publisher)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from classify import consultation
from classify.domain import Config, Decision, decide_fkp, decide_flag, decide_verification
from classify.publisher import Publisher
from classify.ranking import Placement
from classify.settings import ClassifySettings
from classify.store import ClassifyStore
from regsosek import audit
from regsosek.contracts import (
    FamilyErased,
    FkpAdjustment,
    FkpDecisionRecorded,
    FkpForum,
    ForumStatus,
    HouseholdProfile,
    InterviewFlagged,
    InterviewVerified,
    InterviewVerifiedV1,
)
from regsosek.messaging import Incoming, UnitOfWork

_PRELOADED = "classify.preloaded"  # uow.cache key and deferred work: the batch's verified families


def family_of(event: Incoming) -> str | None:
    return getattr(event.data, "family_id", None)


def preloadable(batch: Sequence[Incoming]) -> list[str]:
    """The verified families whose state can be loaded, and whose writes made, together: those
    no other event of the batch is about (each event of a family is decided on what the one
    before it saved)."""
    events = Counter(family_of(m) for m in batch)
    return [m.data.family_id for m in batch if isinstance(m.data, InterviewVerified) and events[m.data.family_id] == 1]


class Classifier:
    def __init__(self, settings: ClassifySettings, config: Config, publisher: Publisher,
                 store_for: Callable[[UnitOfWork], ClassifyStore] = lambda uow: ClassifyStore(uow.conn,
                                                                                              cache=uow.cache)) -> None:
        self.settings = settings
        self.config = config
        self.publisher = publisher
        self.store_for = store_for

    async def _placement(self, uow: UnitOfWork, store: ClassifyStore, sls_id: str) -> Placement:
        """The decile placement of the family's province: the latest ranking, read once per batch."""
        key = ("placement", sls_id[:2])
        if key not in uow.cache:
            uow.cache[key] = await store.placement_for(sls_id, self.config.model)
        return uow.cache[key]

    async def on_verified(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Classify the family, unless a newer decision of verify's was applied already: verify's
        decision sequence decides, never the order of arrival (docs/ORDERING.md)."""
        await self._verified(uow, msg.data)

    async def on_verified_v1(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A v1 record (the whole interview; still on the topic after the rollout, or a re-driven
        dead letter): reduced to its profile at once, and only that is used and kept."""
        e: InterviewVerifiedV1 = msg.data
        await self._verified(uow, e.upgraded())

    async def _verified(self, uow: UnitOfWork, e: InterviewVerified) -> None:
        store = self.store_for(uow)
        if _PRELOADED not in uow.cache:  # the batch's verified families, in one go (its first verification)
            uow.cache[_PRELOADED] = True
            await store.preload_verification_states(preloadable(uow.batch))
            uow.defer(_PRELOADED, store.flush)
        state = await store.state_for_verification(e.family_id)
        placement = await self._placement(uow, store, e.profile.sls_id)
        await self._carry_out(uow, store, decide_verification(self.config, state, e, placement), e.family_id,
                              e.profile, placement)

    async def on_flagged(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A classified family's eligibility is withdrawn; one not classified keeps the flag, so the
        verification it withdraws, should it arrive later, is stale (domain.decide_flag)."""
        e: InterviewFlagged = msg.data
        store = self.store_for(uow)
        state = await store.state_for_flag(e.family_id)
        await self._carry_out(uow, store, decide_flag(self.config, state, e), e.family_id)

    async def on_fkp(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A village consultation decision: kept; a classified family is classified again under it,
        and its regency re-ranked in the background (domain.decide_fkp)."""
        a: FkpAdjustment = msg.data
        store = self.store_for(uow)
        state = await store.state_for_fkp(a.family_id, str(a.submission_id))
        placement = await self._placement(uow, store, a.sls_id)
        await self._carry_out(uow, store, decide_fkp(self.config, state, a, placement), a.family_id,
                              state.profile, placement)

    async def on_forum_decision(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A village consultation forum's decision about a family (classify.consultation): a group change
        classifies it again, moved or died takes it out of the ranking; the forum's regency is re-ranked
        once, after the forum closed and its last decision was applied."""
        e: FkpDecisionRecorded = msg.data
        store = self.store_for(uow)
        tally = await store.forum_tally(str(e.forum_id), e.sls_id[:4], str(e.decision_id))  # the forum's lock first
        state = await store.state_for_forum_decision(e.family_id, str(e.decision_id))
        placement = await self._placement(uow, store, e.sls_id)
        d, after, area = consultation.decide_forum_decision(self.config, state, tally, e, placement)
        await store.save_forum_tally(after, e)
        await self._carry_out(uow, store, d, e.family_id, state.profile, placement)
        if area is not None:
            await store.mark_area(*area)

    async def on_forum(self, uow: UnitOfWork, msg: Incoming) -> None:
        """A forum opened (nothing to do) or closed: its regency's re-rank is asked for once every
        decision it counts was applied (classify.consultation)."""
        e: FkpForum = msg.data
        if e.status is not ForumStatus.CLOSED:
            return
        store = self.store_for(uow)
        after, area = consultation.decide_forum_close(
            await store.forum_tally(str(e.forum_id), e.village_id[:4], None), e.decisions)
        await store.save_forum_tally(after, None)
        if area is not None:
            await store.mark_area(*area)

    async def _carry_out(self, uow: UnitOfWork, store: ClassifyStore, d: Decision, family_id: str,
                         profile: HouseholdProfile | None = None, placement: Placement | None = None) -> None:
        """Saves and publishes a decision (see `Decision` for the order)."""
        if d.ignored is not None:
            return
        if d.fkp is not None:
            await store.keep_fkp(d.fkp)
        seq = 0
        if d.order is not None:
            seq = await store.record_verify_decision(family_id, d.order, publishes=d.publishes)
        elif d.publishes:
            seq = (await store.next_decision_seqs([family_id]))[family_id]
        if d.classification is not None:
            assert profile is not None and placement is not None
            await store.save_classification(profile, d.classification, self.config, placement.ranking_id)
            self.publisher.classified(uow.outbox, profile, d.classification, seq)
        if d.withdrawal is not None:
            await store.withdraw(d.withdrawal)
            self.publisher.withdrawn(uow.outbox, d.withdrawal, seq)
        if d.rerank_area is not None:
            await store.mark_area(*d.rerank_area)

    async def on_erased(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Erasure: the family's profile, classification, withdrawal and FKP decisions are deleted
        (the decisions already published stay on their topics for their retention; intake keeps
        the journey by ids); that it was erased is kept, and audited (ids and counts only)."""
        e: FamilyErased = msg.data
        store = self.store_for(uow)
        counts = await store.erase_family(e)
        await store.record_audit(audit.entry(
            "intake", "service", "family.erase", "family", e.family_id, request_id=msg.envelope.id,
            detail={"erasure_id": str(e.erasure_id), "reason": e.reason.value, **counts}))

    def handlers(self) -> dict:
        return {InterviewVerified: self.on_verified, InterviewVerifiedV1: self.on_verified_v1,
                InterviewFlagged: self.on_flagged, FkpAdjustment: self.on_fkp, FamilyErased: self.on_erased,
                FkpDecisionRecorded: self.on_forum_decision, FkpForum: self.on_forum}
