"""Every event intake publishes, built here and put in the unit of work's outbox (published
with the transaction that stored what it announces; CloudEvents source regsosek.envelope.source_of("intake"))."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from intake import domain
from intake.consultation import CheckRecord, DecisionRecord, ForumRecord
from intake.domain import Erasure, Submission
from intake.registry_domain import CountedUpdate, update_identities
from regsosek.contracts import (
    ErasureReason,
    FamilyErased,
    FamilyInterview,
    FkpDecisionRecorded,
    FkpForum,
    FkpGroundChecked,
    ForumStatus,
    Participants,
    WelfareGroup,
)
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
                           subject=s.sls_id if s.kind == "roster" else (s.family_id or s.sls_id), event_id=event_id,
                           trace=s.trace)
        if isinstance(s.contract, FamilyInterview):
            self.member_identities(uow, s.contract, trace=s.trace)

    def member_identities(self, uow: UnitOfWork, interview: FamilyInterview, *,
                          trace: Mapping[str, str] | None = None) -> None:
        """An accepted interview's members' NIKs, sealed for notify alone (member-identities; also for an
        interview a forum's ground check brings), in the trace context `trace` (headers) or the current one."""
        uow.outbox.publish(Topic.MEMBER_IDENTITIES, interview.location.sls_id,
                           domain.member_identities(interview, self._identity_keys), subject=interview.family_id,
                           trace=trace)

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

    # ------------------------------------------------------------ the village consultation (FKP)

    def forum_recorded(self, uow: UnitOfWork, f: ForumRecord, recorded_by: str) -> None:
        """A forum opened or closed, on fkp-forum keyed by its first SLS, with the counts of what it recorded."""
        uow.outbox.publish(Topic.FKP_FORUM, f.sls_ids[0], FkpForum(
            forum_id=f.forum_id, village_id=f.village_id, sls_id=f.sls_ids[0], sls_ids=f.sls_ids, held_on=f.held_on,
            participants=[Participants.model_validate(p) for p in f.participants],
            status=ForumStatus.CLOSED if f.closed else ForumStatus.OPEN, decisions=f.decisions,
            added_families=f.added_families, pending_ground_checks=f.pending_ground_checks,
            recorded_by=recorded_by, at=f.closed_at or f.opened_at), subject=f.sls_ids[0])

    def decision_recorded(self, uow: UnitOfWork, d: DecisionRecord) -> None:
        """A forum's decision about a family, on fkp-decision keyed by the family's SLS."""
        uow.outbox.publish(Topic.FKP_DECISION, d.sls_id, FkpDecisionRecorded(
            forum_id=d.forum_id, decision_id=d.decision_id, family_id=d.family_id, sls_id=d.sls_id, kind=d.kind,
            welfare_group=None if d.welfare_group is None else WelfareGroup(d.welfare_group),
            reason=d.reason, decided_by=d.decided_by, decided_at=d.decided_at),
            subject=d.family_id)

    def ground_checked(self, uow: UnitOfWork, c: CheckRecord, interview: Submission | None) -> None:
        """An added family's ground check on fkp-ground-check, keyed by its SLS; a found family's interview
        rides in it pseudonymised (published once, here, not on interview-submitted: verify decides it as a
        family added to its SLS), and its members' NIKs go sealed to notify (member_identities)."""
        iv = None if interview is None else domain.event_of(interview.contract, self._nik_hash_key)
        sls_id = c.family_id[:14]
        uow.outbox.publish(Topic.FKP_GROUND_CHECK, sls_id, FkpGroundChecked(
            forum_id=c.forum_id, family_id=c.family_id, sls_id=sls_id, outcome=c.outcome, checked_on=c.checked_on,
            checked_by=c.checked_by, checked_at=c.checked_at, interview=iv), subject=c.family_id)
        if interview is not None and isinstance(interview.contract, FamilyInterview):
            self.member_identities(uow, interview.contract)

    # ------------------------------------------------------------ erasure

    def family_erased(self, uow: UnitOfWork, erasure: Erasure, erased_at: datetime) -> None:
        """family-erased, keyed by the family's SLS: verify, classify and notify erase what they hold of it."""
        uow.outbox.publish(Topic.FAMILY_ERASED, erasure.sls_id, FamilyErased(
            erasure_id=erasure.erasure_id, family_id=erasure.family_id, sls_id=erasure.sls_id,
            reason=ErasureReason(erasure.reason), erased_at=erased_at), subject=erasure.family_id)
