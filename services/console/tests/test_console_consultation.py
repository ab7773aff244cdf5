"""The village consultation in the console's read model (console.consultation, its handlers) on the
in-memory store: a forum and its decisions, each added family with its ground check whichever
topic arrives first; a closed forum stays closed; an erased family's forum rows go."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from test_console_handlers import feed

from console.handlers import ConsoleHandlers
from regsosek.contracts import (
    ErasureReason,
    FamilyErased,
    FkpDecisionRecorded,
    FkpForum,
    FkpGroundChecked,
    ForumStatus,
    Participants,
)

from console_fakes import InMemoryConsoleStore

SLS = "64720100010001"
FORUM = str(uuid.uuid4())
T0 = datetime(2023, 5, 8, 3, tzinfo=UTC)


def forum(status: ForumStatus) -> FkpForum:
    return FkpForum(forum_id=FORUM, village_id=SLS[:10], sls_id=SLS, sls_ids=[SLS], held_on=date(2023, 5, 8),
                    participants=[Participants(role="village_head", count=1), Participants(role="sls_head", count=3)],
                    status=status, decisions=2 if status is ForumStatus.CLOSED else 0,
                    added_families=1 if status is ForumStatus.CLOSED else 0, recorded_by="DESA-1", at=T0)


def decision(family_id: str, kind: str, group: int | None = None) -> FkpDecisionRecorded:
    return FkpDecisionRecorded(forum_id=FORUM, decision_id=str(uuid.uuid4()), family_id=family_id, sls_id=SLS,
                               kind=kind, welfare_group=group, reason="musyawarah", decided_by="DESA-1", decided_at=T0)


async def test_the_village_page_reads_the_forum_its_decisions_and_the_ground_check():
    store = InMemoryConsoleStore()
    h = ConsoleHandlers(store_for=lambda uow: store)
    added = f"{SLS}-0077-001"
    check = FkpGroundChecked(forum_id=FORUM, family_id=added, sls_id=SLS, outcome="not_found",
                             checked_on=date(2023, 5, 10), checked_by="OFC-1", checked_at=T0)
    await feed(h, check, forum(ForumStatus.CLOSED), forum(ForumStatus.OPEN),
               decision(f"{SLS}-0001-001", "group_change", 1), decision(added, "added"))
    [view] = await store.forums_of(SLS[:10], None)
    assert view.forum.status == "closed" and view.participants_total == 4
    assert sorted((d.kind, d.welfare_group, d.ground_check) for d in view.decisions) == [
        ("added", None, "not_found"), ("group_change", 1, None)]
    assert view.pending_ground_checks == 0
    assert await store.forums_of("6401", None) == [] and await store.forums_of(SLS[:10], ("6401",)) == []

    await feed(h, FamilyErased(erasure_id=str(uuid.uuid4()), family_id=added, sls_id=SLS,
                               reason=ErasureReason.DATA_SUBJECT_REQUEST, erased_at=T0))
    [view] = await store.forums_of(SLS[:10], None)
    assert [d.family_id for d in view.decisions] == [f"{SLS}-0001-001"]
