"""Notify's event handlers: each eligibility decision becomes a delivery for every subscription whose
filters match (and every one told about the family before), in the same transaction as the inbox
entry. Each delivery carries that subscription's payload only (domain.payload_for): the decisions
and reasons of its own programmes, and the fields they may receive.

A batch's decisions are weighed together just before its commit: its families' state is loaded once
(store.family_state), the live subscriptions once, the domain decides in one call
(domain.plan_deliveries) and the store saves the plan."""

from __future__ import annotations

from collections.abc import Callable

from notify.domain import AccessRules, DecisionReceived, SealedIdentities, erasure_notice, plan_deliveries
from notify.settings import DEVELOPMENT_NIK_LOOKUP_KEY
from notify.store import NotifyStore, store_in
from regsosek import audit
from regsosek.contracts import Contract, EligibilityDecided, FamilyErased, MemberIdentities
from regsosek.contracts.identities import identity_aad, parse_identity_plaintext, unb64
from regsosek.crypto import CannotOpen, Keyring, kid_of
from regsosek.messaging import Handler, Incoming, UnitOfWork
from regsosek.pseudonyms import nik_hash
from regsosek.telemetry import current_trace_headers
from regsosek.topics import Topic

_PENDING = "notify.decisions"  # uow.cache key: the batch's decisions, weighed at commit
_IDENTITIES = "notify.identities"  # uow.cache key: the batch's identity lists, saved at commit


class NotifyHandlers:
    def __init__(self, access: AccessRules, store_for: Callable[[UnitOfWork], NotifyStore] = store_in, *,
                 identity_keys: Keyring | None = None, nik_lookup_key: str = DEVELOPMENT_NIK_LOOKUP_KEY) -> None:
        self.access = access  # what each programme may receive (data/programme-access-*.yaml)
        self.identity_keys = identity_keys  # opens the identity feed (member-identities); app.py passes the settings'

        self.store_for = store_for
        self.nik_lookup_key = nik_lookup_key  # the member index's keyed hashes (DCI search by NIK)

    def handlers(self) -> dict[type[Contract], Handler]:
        return {EligibilityDecided: self.on_eligibility, FamilyErased: self.on_erased,
                MemberIdentities: self.on_member_identities}

    async def on_member_identities(self, uow: UnitOfWork, msg: Incoming) -> None:
        """An interview's sealed member NIKs (member-identities), kept as received for the deliveries
        that may carry them. It must open with the feed's keys: one that does not (a key notify lacks,
        or altered or moved to another family) raises regsosek.crypto.CannotOpen, whose message names
        the key id only, and is dead-lettered with it. The lists that open are saved together at the
        batch's commit (`_save_identities`)."""
        e: MemberIdentities = msg.data
        if self.identity_keys is None:
            raise CannotOpen("notify was built without the identity feed's keys")
        sealed = unb64(e.sealed)
        niks = parse_identity_plaintext(self.identity_keys.open(sealed, identity_aad(e.family_id, e.submission_id)))
        index = tuple((line, nik_hash(self.nik_lookup_key, nik)) for line, nik in sorted(niks.items()))
        uow.cache.setdefault(_IDENTITIES, []).append(
            SealedIdentities(e.family_id, e.submission_id, sealed, kid_of(sealed), e.members, index))
        uow.defer("identities", lambda: self._save_identities(uow))

    async def _save_identities(self, uow: UnitOfWork) -> None:
        """The batch's identity lists, saved together just before its commit (two statements)."""
        await self.store_for(uow).save_member_identities(uow.cache.pop(_IDENTITIES, []))

    async def on_eligibility(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: EligibilityDecided = msg.data
        envelope = {"event_id": msg.envelope.id, "event_type": msg.envelope.type, "subject": e.family_id,
                    "time": msg.envelope.time}
        decision = DecisionReceived(
            family_id=e.family_id, decision_seq=e.decision_seq, event_id=msg.envelope.id, envelope=envelope,
            data=e.model_dump(mode="json"), sls_id=e.sls_id, welfare_group=int(e.welfare_group),
            eligible=frozenset(d.programme for d in e.decisions if d.eligible),
            traceparent=current_trace_headers().get("traceparent"))
        uow.cache.setdefault(_PENDING, []).append(decision)
        uow.defer("deliveries", lambda: self._queue_batch(uow))

    async def _queue_batch(self, uow: UnitOfWork) -> None:
        """Queues each decision newer than the newest already queued for its family for its recipients,
        and remembers the newest and which subscriptions were told about which family."""
        decisions: list[DecisionReceived] = uow.cache.pop(_PENDING, [])
        if not decisions:
            return
        store = self.store_for(uow)
        state = await store.family_state([d.family_id for d in decisions])
        live = await store.live_subscriptions()  # once per batch
        await store.save_plan(plan_deliveries(decisions, live, state, self.access))

    async def on_erased(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Erasure: the family's delivery payloads are emptied (not-yet-sent ones are not sent), the
        delivery figures stay; later decisions about it are not queued; it leaves the DCI read model; every
        subscription told about it is sent an erasure notice (domain.erasure_notice: ids only); audited
        (ids and counts)."""
        e: FamilyErased = msg.data
        store = self.store_for(uow)
        counts = await store.erase_family(e)
        notice = erasure_notice(event_id=msg.envelope.id, event_type=msg.envelope.type, family_id=e.family_id,
                                erasure_id=str(e.erasure_id), erased_at=e.erased_at.isoformat())
        counts["erasure_notices"] = await store.queue_erasure_notices(
            e.family_id, msg.envelope.id, Topic.FAMILY_ERASED.value, notice)
        await store.record_audit(audit.entry(
            "intake", "service", "family.erase", "family", e.family_id, request_id=msg.envelope.id,
            detail={"erasure_id": str(e.erasure_id), "reason": e.reason.value, **counts}))
