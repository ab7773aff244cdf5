"""The run's village consultation (regsosek_tools.consultation): one or two forums drawn from the
sample's seed, each with a decision of every kind it holds and a missed family whose interview
passes intake's checks for a ground check (dated after its forum, a place of its own, no KK or NIK)."""

from __future__ import annotations

from datetime import date

from intake.domain import check_interview
from regsosek_tools.consultation import HELD_ON, ForumResult, consultation_ok, forum_plans
from regsosek_tools.sample import generate


def plans(seed: int = 5):
    sample = generate(seed, 90, field_outcomes=True)
    decided = {iv.family_id: 3 for iv in sample.interviews if iv.result.responded}
    return sample, forum_plans(sample, decided)


def test_two_forums_each_deciding_about_its_own_village_and_adding_a_family():
    sample, forums = plans()
    assert len(forums) == 2 and len({f.village_id for f in forums}) == 2
    known = {iv.family_id for iv in sample.interviews}
    for f in forums:
        kinds = [d["kind"] for d in f.decisions]
        assert kinds[:2] == ["group_change", "confirmed"] and kinds[2] in ("moved", "died") and kinds[3] == "added"
        assert all(d["family_id"].startswith(f.village_id) for d in f.decisions)
        assert all(s.startswith(f.village_id) for s in f.sls_ids)
        added = f.added
        assert added.family_id == f.decisions[-1]["family_id"] and added.family_id not in known
        assert added.location.kk_number is None and all(m.nik is None for m in added.members)
        errors, _ = check_interview(added, collection=(date.fromisoformat(HELD_ON), date.max))
        assert errors == []
    assert {f.decisions[2]["kind"] for f in forums} == {"moved", "died"}


def test_the_same_seed_gives_the_same_requests_so_a_run_again_is_answered_as_repeats():
    assert [f.opening() for f in plans()[1]] == [f.opening() for f in plans()[1]]
    assert [f.decisions for f in plans()[1]] == [f.decisions for f in plans()[1]]


def test_the_consultation_is_ok_only_when_the_added_family_was_verified_as_added_and_decided():
    good = ForumResult("6472010001", {"added": 1}, [], "verified_added", "decided", True, True)
    assert consultation_ok([good])
    assert not consultation_ok([ForumResult("6472010001", {}, [], "not_on_roster", "flagged", True, False)])
