"""A village consultation's decisions and close on classify's handlers (in-memory store, fake unit
of work): each kind's effect, and the regency's re-rank asked for once per forum, whichever of the
close and the last decision arrives last. The real-stack proof: tests/integration/test_fkp_forum.py."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from test_classify_handlers import CONFIG, FAMILY, SLS, T0, verified

from classify.consultation import ForumTally, decide_forum_close
from classify.handlers import Classifier
from classify.publisher import Publisher
from classify.settings import ClassifySettings
from regsosek.contracts import (
    EligibilityDecided,
    FamilyClassified,
    FkpDecisionKind,
    FkpDecisionRecorded,
    FkpForum,
    ForumStatus,
    Participants,
    WelfareGroup,
)
from regsosek.envelope import new_envelope
from regsosek.messaging import Incoming
from regsosek.testing import FakeUnitOfWork

FORUM = str(uuid.uuid4())


@pytest.fixture
def classifier(store) -> Classifier:
    return Classifier(ClassifySettings(), CONFIG, Publisher(CONFIG, clock=lambda: T0), store_for=lambda uow: store)


async def handle(classifier: Classifier, *events) -> FakeUnitOfWork:
    """Each event in a unit of work of its own; the last one's."""
    uow = FakeUnitOfWork("classify")
    for e in events:
        uow = FakeUnitOfWork("classify")
        subject = getattr(e, "family_id", None) or e.sls_id
        await classifier.handlers()[type(e)](uow, Incoming(new_envelope(e, source="/regsosek/test", subject=subject),
                                                           e, None))  # type: ignore[arg-type]
        await uow.commit()
    return uow


def decision(kind: FkpDecisionKind, group: WelfareGroup | None = None, family_id: str = FAMILY) -> FkpDecisionRecorded:
    return FkpDecisionRecorded(forum_id=FORUM, decision_id=str(uuid.uuid4()), family_id=family_id, sls_id=family_id[:14],
                               kind=kind, welfare_group=group, reason="musyawarah", decided_by="DESA-1", decided_at=T0)


def closed(decisions: int) -> FkpForum:
    return FkpForum(forum_id=FORUM, village_id=SLS[:10], sls_id=SLS, sls_ids=[SLS], held_on=date(2023, 5, 8),
                    participants=[Participants(role="village_head", count=1)], status=ForumStatus.CLOSED,
                    decisions=decisions, recorded_by="DESA-1", at=T0)


async def test_a_group_change_classifies_the_family_again_without_a_rerank_per_decision(classifier, store):
    await handle(classifier, verified(seq=1))
    uow = await handle(classifier, decision(FkpDecisionKind.GROUP_CHANGE, WelfareGroup.SANGAT_MISKIN))
    [fc] = uow.events(FamilyClassified)
    assert fc.welfare_group == WelfareGroup.SANGAT_MISKIN and fc.adjusted_by_fkp and fc.decision_seq == 2
    assert store.areas == {}, "no re-rank per decision"


async def test_moved_and_died_take_the_family_out_of_the_ranking(classifier, store):
    for kind, words in ((FkpDecisionKind.MOVED, "moved away"), (FkpDecisionKind.DIED, "head died")):
        await handle(classifier, verified(seq=1 if kind is FkpDecisionKind.MOVED else 3))
        uow = await handle(classifier, decision(kind))
        assert uow.events(FamilyClassified) == []
        [ed] = uow.events(EligibilityDecided)
        assert not any(d.eligible for d in ed.decisions) and all(words in d.reasons[0] for d in ed.decisions)
        assert FAMILY not in store.families and FAMILY in store.withdrawals


async def test_confirmed_and_added_publish_nothing(classifier, store):
    await handle(classifier, verified(seq=1))
    for kind in (FkpDecisionKind.CONFIRMED, FkpDecisionKind.ADDED):
        uow = await handle(classifier, decision(kind))
        assert uow.published == []
    assert FAMILY in store.families


async def test_a_removal_of_a_family_never_classified_changes_nothing(classifier, store):
    uow = await handle(classifier, decision(FkpDecisionKind.MOVED))
    assert uow.published == [] and store.withdrawals == {}


async def test_the_regency_is_reranked_once_after_the_close_and_the_last_decision(classifier, store):
    await handle(classifier, verified(seq=1))
    await handle(classifier, decision(FkpDecisionKind.CONFIRMED))
    await handle(classifier, closed(decisions=2))
    assert store.areas == {}, "one decision still to come"
    await handle(classifier, decision(FkpDecisionKind.GROUP_CHANGE, WelfareGroup.MISKIN))
    assert store.areas == {SLS[:4]: f"fkp forum {FORUM} closed"}
    store.areas.clear()
    await handle(classifier, closed(decisions=2))  # the close again (a redelivery): not asked again
    assert store.areas == {}


async def test_a_close_after_every_decision_asks_for_the_rerank_itself(classifier, store):
    await handle(classifier, decision(FkpDecisionKind.CONFIRMED), decision(FkpDecisionKind.ADDED, family_id=SLS + "-0077-001"))
    await handle(classifier, closed(decisions=2))
    assert store.areas == {SLS[:4]: f"fkp forum {FORUM} closed"}


def test_the_tally_asks_once_and_only_when_every_counted_decision_was_applied():
    assert decide_forum_close(ForumTally(FORUM, "6472", None, 1), 2) == (ForumTally(FORUM, "6472", 2, 1), None)
    after, area = decide_forum_close(ForumTally(FORUM, "6472", None, 2), 2)
    assert after.rerank_asked and area == ("6472", f"fkp forum {FORUM} closed")
    assert decide_forum_close(after, 2) == (after, None)
