"""Classify's handler logic on the in-memory store and the fake unit of work (no database, no
broker): withdrawals, the order of verify's decisions and interview versions (decision_seq),
FKP adjustments and erasure. The real-stack proof is in tests/integration."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from classify.domain import Config
from classify.handlers import Classifier
from classify.model import DATA, PmtModel, PovertyLines, RuleSet
from classify.publisher import Publisher
from classify.settings import ClassifySettings
from regsosek.contracts import (
    EligibilityDecided,
    ErasureReason,
    FamilyClassified,
    FamilyErased,
    FamilyInterview,
    FkpAdjustment,
    FlagReason,
    HouseholdProfile,
    InterviewFlagged,
    InterviewVerified,
    InterviewVerifiedV1,
    WelfareGroup,
    household_profile,
)
from regsosek.envelope import new_envelope
from regsosek.examples import family_interview
from regsosek.messaging import Incoming
from regsosek.testing import FakeUnitOfWork
from regsosek.topics import Topic

CONFIG = Config(PmtModel.load(DATA / "pmt-illustrative-2022.1.yaml"), PovertyLines.load(DATA / "poverty-lines-2022.yaml"),
                RuleSet.load(DATA / "eligibility-2022.1.yaml"))
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
INTERVIEW = family_interview()


def interview(version: int = 1) -> FamilyInterview:
    doc = copy.deepcopy(INTERVIEW)
    doc["version"] = version
    return FamilyInterview.model_validate(doc)


def profile(version: int = 1) -> HouseholdProfile:
    return household_profile(interview(version))


FAMILY, SLS = profile().family_id, profile().sls_id


def verified(seq: int, version: int = 1, at: datetime = T0) -> InterviewVerified:
    return InterviewVerified(family_id=FAMILY, sls_id=SLS, outcome="verified", verified_at=at,
                             profile=profile(version), decision_seq=seq)


def flagged(seq: int, version: int = 1, reason: FlagReason = FlagReason.NOT_ON_ROSTER,
            at: datetime = T0) -> InterviewFlagged:
    return InterviewFlagged(family_id=FAMILY, sls_id=SLS, submission_id=str(uuid.uuid4()), version=version,
                            reason=reason, detail="no such family on the roster", flagged_at=at, decision_seq=seq)


def fkp(group: WelfareGroup, decided_at: datetime = T0) -> FkpAdjustment:
    return FkpAdjustment(submission_id=str(uuid.uuid4()), family_id=FAMILY, sls_id=SLS, welfare_group=group,
                         reason="village consultation", decided_by="kepala desa", decided_at=decided_at)


def erased() -> FamilyErased:
    return FamilyErased(erasure_id=str(uuid.uuid4()), family_id=FAMILY, sls_id=SLS,
                        reason=ErasureReason.DATA_SUBJECT_REQUEST, erased_at=T0)


def incoming(e) -> Incoming:
    return Incoming(new_envelope(e, source="/regsosek/test", subject=e.family_id), e, None)  # type: ignore[arg-type]


@pytest.fixture
def classifier(store) -> Classifier:
    return Classifier(ClassifySettings(), CONFIG, Publisher(CONFIG, clock=lambda: T0), store_for=lambda uow: store)


async def handle(classifier: Classifier, *events) -> FakeUnitOfWork:
    """Each event in a unit of work of its own (as the consumer applies them); the last one's."""
    uow = FakeUnitOfWork("classify")
    for e in events:
        uow = FakeUnitOfWork("classify")
        await classifier.handlers()[type(e)](uow, incoming(e))
        await uow.commit()
    return uow


# ---------------------------------------------------------------- classification


async def test_a_verified_family_is_classified_and_published_under_decision_seq_1(classifier, store):
    uow = await handle(classifier, verified(seq=1))
    [fc] = uow.events(FamilyClassified)
    [ed] = uow.events(EligibilityDecided)
    assert fc.decision_seq == ed.decision_seq == 1 and fc.family_id == ed.family_id == FAMILY
    assert fc.model_version == CONFIG.model.version and ed.rule_version == CONFIG.rules.version
    assert fc.classified_at == ed.decided_at == T0
    assert {p.topic for p in uow.published} == {Topic.FAMILY_CLASSIFIED.wire, Topic.ELIGIBILITY_DECIDED.wire}
    assert all(p.key == SLS and p.subject == FAMILY for p in uow.published)
    row = store.families[FAMILY]
    assert row.classification.decile == fc.decile and row.versions == CONFIG.versions
    assert fc.decile_basis.startswith("provisional: reference cut-points")


async def test_a_v1_verified_record_is_classified_from_its_profile(classifier, store):
    v1 = InterviewVerifiedV1(family_id=FAMILY, sls_id=SLS, outcome="verified", verified_at=T0,
                             interview=interview(), decision_seq=1)
    uow = await handle(classifier, v1)
    assert len(uow.events(FamilyClassified)) == 1
    assert store.families[FAMILY].profile == profile()


# ---------------------------------------------------------------- withdrawals


async def test_a_flag_after_classification_withdraws_every_programme(classifier, store):
    await handle(classifier, verified(seq=1))
    uow = await handle(classifier, flagged(seq=2))
    assert uow.events(FamilyClassified) == []
    [ed] = uow.events(EligibilityDecided)
    assert ed.decision_seq == 2
    assert [d.programme for d in ed.decisions] == [r.programme for r in CONFIG.rules.rules]
    assert not any(d.eligible for d in ed.decisions)
    assert all(d.reasons == ["verification withdrawn (not_on_roster): no such family on the roster"]
               for d in ed.decisions)
    assert FAMILY not in store.families and FAMILY in store.withdrawals


async def test_a_flag_before_the_verification_makes_the_verification_stale(classifier, store):
    uow = await handle(classifier, flagged(seq=2))
    assert uow.published == []  # nothing classified, nothing to withdraw
    assert store.order[FAMILY].verify.seq == 2 and store.order[FAMILY].decision_seq == 0
    uow = await handle(classifier, verified(seq=1))  # the decision the flag withdrew, arriving late
    assert uow.published == [] and FAMILY not in store.families


async def test_a_newer_verification_after_a_flag_classifies_again_and_lifts_the_withdrawal(classifier, store):
    await handle(classifier, verified(seq=1), flagged(seq=2))
    uow = await handle(classifier, verified(seq=3))
    [fc] = uow.events(FamilyClassified)
    assert fc.decision_seq == 3 and FAMILY in store.families and FAMILY not in store.withdrawals


async def test_an_older_flag_and_a_duplicate_interview_flag_change_nothing(classifier, store):
    await handle(classifier, verified(seq=2))
    assert (await handle(classifier, flagged(seq=1))).published == []
    duplicate = flagged(seq=3, reason=FlagReason.DUPLICATE_INTERVIEW)
    assert (await handle(classifier, duplicate)).published == []
    assert FAMILY in store.families and store.order[FAMILY].verify.seq == 2


# ---------------------------------------------------------------- versions and decision_seq


async def test_a_newer_interview_version_supersedes_and_an_older_one_is_ignored(classifier, store):
    # Before decision sequences existed (seq 0), the interview version orders verify's decisions.
    await handle(classifier, verified(seq=0, version=1))
    uow = await handle(classifier, verified(seq=0, version=2))
    [fc] = uow.events(FamilyClassified)
    assert fc.version == 2 and fc.decision_seq == 2
    assert (await handle(classifier, verified(seq=0, version=1, at=T0 + timedelta(days=1)))).published == []
    assert store.families[FAMILY].profile.version == 2


async def test_the_same_verification_again_is_not_newer(classifier, store):
    await handle(classifier, verified(seq=1))
    assert (await handle(classifier, verified(seq=1))).published == []
    assert store.order[FAMILY].decision_seq == 1


async def test_verifys_sequence_decides_over_the_interview_version(classifier, store):
    await handle(classifier, verified(seq=5, version=1))
    assert (await handle(classifier, verified(seq=4, version=2))).published == []
    assert store.families[FAMILY].profile.version == 1


# ---------------------------------------------------------------- FKP adjustments


async def test_an_fkp_decision_classifies_the_family_again_and_marks_its_regency(classifier, store):
    first = (await handle(classifier, verified(seq=1))).events(FamilyClassified)[0]
    group = WelfareGroup.TIDAK_MISKIN if first.welfare_group is not WelfareGroup.TIDAK_MISKIN else WelfareGroup.MISKIN
    a = fkp(group)
    uow = await handle(classifier, a)
    [fc] = uow.events(FamilyClassified)
    [ed] = uow.events(EligibilityDecided)
    assert fc.adjusted_by_fkp and fc.welfare_group is group and ed.welfare_group is group
    assert fc.decision_seq == ed.decision_seq == 2
    assert store.areas == {SLS[:4]: f"fkp {a.submission_id}"} and store.fkp == [a]


async def test_an_fkp_decision_older_than_the_one_kept_does_not_apply(classifier, store):
    await handle(classifier, verified(seq=1), fkp(WelfareGroup.SANGAT_MISKIN, decided_at=T0 + timedelta(days=2)))
    uow = await handle(classifier, fkp(WelfareGroup.TIDAK_MISKIN, decided_at=T0 + timedelta(days=1)))
    [fc] = uow.events(FamilyClassified)  # classified again, under the latest decision: still sangat miskin
    assert fc.welfare_group is WelfareGroup.SANGAT_MISKIN and fc.decision_seq == 3
    assert len(store.fkp) == 2


async def test_an_fkp_decision_before_classification_is_kept_and_applies_at_classification(classifier, store):
    uow = await handle(classifier, fkp(WelfareGroup.SANGAT_MISKIN))
    assert uow.published == [] and len(store.fkp) == 1 and SLS[:4] in store.areas
    [fc] = (await handle(classifier, verified(seq=1))).events(FamilyClassified)
    assert fc.adjusted_by_fkp and fc.welfare_group is WelfareGroup.SANGAT_MISKIN and fc.decision_seq == 1


# ---------------------------------------------------------------- erasure


async def test_erasure_deletes_what_classify_holds_audits_counts_and_stays_erased(classifier, store):
    await handle(classifier, verified(seq=1), fkp(WelfareGroup.MISKIN))
    e = erased()
    uow = await handle(classifier, e)
    assert uow.published == []
    assert FAMILY not in store.families and store.fkp == [] and FAMILY in store.erased
    [entry] = store.audit
    assert (entry.action, entry.object_id) == ("family.erase", FAMILY)
    assert entry.detail == {"erasure_id": str(e.erasure_id), "reason": "data_subject_request",
                            "families": 1, "withdrawals": 0, "fkp_adjustments": 1}
    # A verification or FKP decision retained or re-driven from before does not bring it back.
    assert (await handle(classifier, verified(seq=2))).published == []
    assert (await handle(classifier, fkp(WelfareGroup.MISKIN))).published == []
    assert FAMILY not in store.families and store.fkp == []


# ---------------------------------------------------------------- a batch's verified families, loaded together


def test_only_verified_families_no_other_event_of_the_batch_is_about_are_loaded_together():
    from classify.handlers import preloadable

    other = profile().model_copy(update={"family_id": FAMILY[:-1] + "9"})
    alone = InterviewVerified(family_id=other.family_id, sls_id=SLS, outcome="verified", verified_at=T0,
                              profile=other, decision_seq=1)
    assert preloadable([incoming(verified(seq=1)), incoming(alone)]) == [FAMILY, alone.family_id]
    # the family's flag in the same batch: its verification is decided on what the flag saved
    assert preloadable([incoming(verified(seq=1)), incoming(flagged(seq=2)), incoming(alone)]) == [alone.family_id]
    assert preloadable([incoming(verified(seq=1)), incoming(verified(seq=2, version=2))]) == []


async def test_a_batch_of_verified_families_is_decided_on_states_loaded_together(classifier, store):
    uow = FakeUnitOfWork("classify")
    uow.batch = (incoming(verified(seq=1)),)
    await classifier.handlers()[InterviewVerified](uow, uow.batch[0])
    assert store.preloaded == {}  # loaded, then taken by the one verification
    await uow.commit()
    assert store.flushes == 1 and [e.decision_seq for e in uow.events(FamilyClassified)] == [1]
