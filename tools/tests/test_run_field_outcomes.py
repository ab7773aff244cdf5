"""The run's summary of field situations: a non-response is final on acceptance (verify gives it
no verdict by design), and each situation's families are counted with those that came out as expected."""

from __future__ import annotations

from types import SimpleNamespace

from regsosek_tools.run import Endpoints, Runner
from regsosek_tools.sample import generate


def runner(families: int = 60) -> Runner:
    sample = generate(5, families, field_outcomes=True)
    ep = Endpoints(intake="", notify="", receiver="", callback="")
    return Runner(sample, ep, SimpleNamespace(admin="token"), concurrency=4, batch_every=0, batch_size=10,
                  timeout=1.0, notify=False, poll_interval=0.1, poll_max=1.0, quiet=True)


def test_a_refusal_is_accounted_for_on_acceptance_and_reported():
    r = runner()
    refused = [t for t in r.tracks.values() if r.sample.situations.get(t.family_id) == "refused"]
    assert refused
    for t in r.tracks.values():
        r._receipt(t, 202, {"status": "accepted"})
    assert all((t.final, t.outcome, t.complete) == ("accounted", "refused", True) for t in refused)
    assert all(t.final is None for t in r.tracks.values() if t not in refused)
    rows = r.field_outcomes()
    assert rows["refused"] == {"families": len(refused), "as_expected": len(refused)}
    assert rows["split_off"]["as_expected"] == 0  # not verified yet: nothing polled


def test_a_verified_split_off_family_counts_as_expected():
    r = runner()
    (t,) = [t for t in r.tracks.values() if r.sample.situations.get(t.family_id) == "split_off"]
    r._apply(t, {"final": "decided", "journey": [{"step": "verified", "outcome": "verified"}]})
    assert r.field_outcomes()["split_off"] == {"families": 1, "as_expected": 1}


def test_the_forums_plan_from_the_census_group_not_from_a_later_group_change():
    """A run again finds the first run's FKP group change in the journey (the latest classified step);
    its forums must be planned from the census's group, or its decisions differ and are refused as conflicts."""
    r = runner()
    t = next(t for t in r.tracks.values() if r.sample.situations.get(t.family_id) is None)
    r._apply(t, {"final": "decided", "journey": [
        {"step": "verified", "outcome": "verified", "decision_seq": 1},
        {"step": "classified", "welfare_group": 3, "decile": 4, "decision_seq": 1},
        {"step": "eligibility", "eligible": ["pkh"], "decision_seq": 1},
        {"step": "classified", "welfare_group": 1, "decile": 4, "decision_seq": 2}]})
    assert (t.welfare_group, t.census_group) == (1, 3)
