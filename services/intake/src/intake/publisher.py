"""Every event intake publishes, built here and put in the unit of work's outbox (published
with the transaction that stored what it announces; CloudEvents source regsosek.envelope.source_of("intake"))."""

from __future__ import annotations

from datetime import datetime

from intake import domain
from intake.domain import Erasure, Submission
from regsosek.contracts import ErasureReason, FamilyErased, FamilyInterview
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
        uow.outbox.publish(TOPIC_OF_KIND[s.kind], s.sls_id, domain.event_of(s.contract, self._nik_hash_key),
                           subject=s.sls_id if s.kind == "roster" else (s.family_id or s.sls_id), event_id=event_id)
        if isinstance(s.contract, FamilyInterview):
            uow.outbox.publish(Topic.MEMBER_IDENTITIES, s.sls_id,
                               domain.member_identities(s.contract, self._identity_keys), subject=s.family_id)

    def family_erased(self, uow: UnitOfWork, erasure: Erasure, erased_at: datetime) -> None:
        """family-erased, keyed by the family's SLS: verify, classify and notify erase what they hold of it."""
        uow.outbox.publish(Topic.FAMILY_ERASED, erasure.sls_id, FamilyErased(
            erasure_id=erasure.erasure_id, family_id=erasure.family_id, sls_id=erasure.sls_id,
            reason=ErasureReason(erasure.reason), erased_at=erased_at), subject=erasure.family_id)
