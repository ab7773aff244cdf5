"""Every event intake publishes, built here and put in the unit of work's outbox (published
with the transaction that stored what it announces; CloudEvents source regsosek.envelope.source_of("intake"))."""

from __future__ import annotations

from datetime import datetime

from intake import domain
from intake.domain import Erasure, Submission
from intake.registry_domain import CountedUpdate, update_identities
from regsosek.contracts import ErasureReason, FamilyErased, FamilyInterview
from regsosek.contracts.updates import FamilyUpdated, pseudonymise_change
from regsosek.crypto import Keyring
from regsosek.messaging import UnitOfWork
from regsosek.topics import Topic

TOPIC_OF_KIND = {"interview": Topic.INTERVIEW_SUBMITTED, "roster": Topic.SLS_ROSTER,
                 "resolution": Topic.VERIFICATION_RESOLVED, "fkp": Topic.FKP_ADJUSTMENT}


class IntakePublisher:
    def __init__(self, nik_hash_key: str, identity_keys: Keyring) -> None:
        self._nik_hash_key = nik_hash_key
        self._identity_keys = identity_keys  # the identity feed's: seals members' NIKs for notify

    def submission_accepted(self, uow: UnitOfWork, s: Submission, event_id: str) -> None:
        """An accepted submission on its kind's topic, keyed by its SLS, with the event id its receipt
        names: an interview or a roster pseudonymised (domain.event_of), a resolution or an FKP
        result as received. The subject is the family, or the SLS for a roster."""
        if s.kind not in TOPIC_OF_KIND:
            return  # the living registry's submissions: what counts of them is published by family_updated
        uow.outbox.publish(TOPIC_OF_KIND[s.kind], s.sls_id, domain.event_of(s.contract, self._nik_hash_key),
                           subject=s.sls_id if s.kind == "roster" else (s.family_id or s.sls_id), event_id=event_id)
        if isinstance(s.contract, FamilyInterview):
            self.member_identities(uow, s.contract)

    def member_identities(self, uow: UnitOfWork, interview: FamilyInterview) -> None:
        """An accepted interview's members' NIKs, sealed for notify alone (member-identities; also for an
        interview a forum's ground check brings)."""
        uow.outbox.publish(Topic.MEMBER_IDENTITIES, interview.location.sls_id,
                           domain.member_identities(interview, self._identity_keys), subject=interview.family_id)

    def family_updated(self, uow: UnitOfWork, u: CountedUpdate, base_niks: dict[int, str]) -> None:
        """An update that counts (field-checked, or a complaint's correction) on family-update, keyed by
        its SLS, pseudonymised (regsosek.contracts.updates.pseudonymise_change): verify applies it. With
        it, the family's identity list under the update's id (registry_domain.update_identities: the
        latest interview's NIKs, `base_niks`, and a new member's), for notify's by-name programmes."""
        change = pseudonymise_change(u.change, submission_id=u.submission_id, reported_by=u.reported_by,
                                     occurred_on=u.occurred_on, key=self._nik_hash_key)
        uow.outbox.publish(Topic.FAMILY_UPDATE, u.sls_id, FamilyUpdated(
            submission_id=u.submission_id, family_id=u.family_id, sls_id=u.sls_id, occurred_on=u.occurred_on,
            basis=u.basis, confirmed_on=u.confirmed_on, change=change), subject=u.family_id)
        uow.outbox.publish(Topic.MEMBER_IDENTITIES, u.sls_id, update_identities(u, base_niks, self._identity_keys),
                           subject=u.family_id)

    def family_erased(self, uow: UnitOfWork, erasure: Erasure, erased_at: datetime) -> None:
        """family-erased, keyed by the family's SLS: verify, classify and notify erase what they hold of it."""
        uow.outbox.publish(Topic.FAMILY_ERASED, erasure.sls_id, FamilyErased(
            erasure_id=erasure.erasure_id, family_id=erasure.family_id, sls_id=erasure.sls_id,
            reason=ErasureReason(erasure.reason), erased_at=erased_at), subject=erasure.family_id)
