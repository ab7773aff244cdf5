"""The read model's projection (order-tolerant, by decision sequence), scope and progress, pure."""

from __future__ import annotations

import uuid
from datetime import date

from console import domain
from console.domain import FamilyState, Progress, VerifyState
from regsosek.auth import Principal, Role
from regsosek.contracts import RosterSubmitted
from regsosek.contracts.pseudonymous import PseudonymousRosterFamily

from console_events import FAMILY, SLS, SUBMITTED, at, classified, eligibility, flagged, resolution, verified


def fresh() -> FamilyState:
    return FamilyState.new(FAMILY, SLS)


def apply(state: FamilyState, change: domain.Change) -> FamilyState:
    return change.state or state


def test_a_verification_before_its_interview_arrives_keeps_both():
    s = apply(fresh(), domain.on_verified(fresh(), verified(seq=1)))
    s = apply(s, domain.on_interview(s, SUBMITTED, at(0)))
    assert s.verify_state is VerifyState.VERIFIED and s.submission_id == str(SUBMITTED.submission_id)
    assert s.interviewed_at == SUBMITTED.interviewed_at


def test_an_older_decision_changes_nothing_but_adds_its_step():
    s = apply(fresh(), domain.on_verified(fresh(), verified(seq=2, minutes=5, outcome="verified_by_supervisor")))
    late = domain.on_flagged(s, flagged(seq=1, minutes=1))
    assert late.state is None and late.step is not None and late.step.step == "flagged"


def test_a_duplicate_interview_flag_is_no_decision_about_the_family():
    s = apply(fresh(), domain.on_verified(fresh(), verified(seq=3)))
    dup = domain.on_flagged(s, flagged(seq=3, reason="duplicate_interview"))
    assert dup.state is None and dup.step.detail["reason"] == "duplicate_interview"


def test_unsequenced_decisions_apply_in_arrival_order():
    s = apply(fresh(), domain.on_flagged(fresh(), flagged(seq=0)))
    s = apply(s, domain.on_verified(s, verified(seq=0, minutes=3)))
    assert s.verify_state is VerifyState.VERIFIED


def test_classification_and_eligibility_share_a_sequence_and_a_lower_one_is_ignored():
    s = apply(fresh(), domain.on_classified(fresh(), classified(seq=2, group=2)))
    s = apply(s, domain.on_eligibility(s, eligibility(seq=2, group=2)))
    assert (s.welfare_group, s.rule_version, s.eligible_programmes) == (2, "rules-1", ("pkh",))
    assert domain.on_classified(s, classified(seq=1, group=4)).state is None
    s = apply(s, domain.on_classified(s, classified(seq=3, group=1)))
    assert s.welfare_group == 1


def test_a_supervisor_decision_waits_for_the_pipeline_then_leaves_the_worklist():
    s = apply(fresh(), domain.on_flagged(fresh(), flagged(seq=1, minutes=1)))
    assert domain.in_worklist(s) and not domain.awaiting_resolution(s)
    s = apply(s, domain.on_resolution(s, resolution(minutes=2)))
    assert domain.awaiting_resolution(s) and domain.in_worklist(s)
    s = apply(s, domain.on_verified(s, verified(seq=2, minutes=3, outcome="verified_by_supervisor")))
    assert not domain.awaiting_resolution(s) and not domain.in_worklist(s)


def test_a_rejection_is_a_decision_already():
    s = apply(fresh(), domain.on_flagged(fresh(), flagged(seq=2, reason="rejected_by_supervisor")))
    assert s.verify_state is VerifyState.FLAGGED and not domain.in_worklist(s)


def test_resolution_kinds_travel_as_the_contracts_decisions():
    assert domain.RESOLUTIONS["moved"].value == "reject" and domain.RESOLUTIONS["duplicate_resolved"].value == "verify"
    assert domain.resolution_reason("moved", "  to Balikpapan ") == "moved: to Balikpapan"
    assert domain.resolution_reason("accept", " ") == "accept"


def test_roster_counts_the_absent_and_verifys_count_wins():
    roster = RosterSubmitted(submission_id=uuid.uuid4(), sls_id=SLS, officer_id="OFC-1", confirmed_at=at(0), families=[
        PseudonymousRosterFamily(building_no=b, family_no=1, member_count=3, status=status)
        for b, status in enumerate(("present", "moved", "dissolved", "unknown", "added"), start=1)])
    outcomes = {"refused": 0, "moved": 1, "dissolved": 1, "not_found": 1}
    assert domain.roster_count(roster) == domain.RosterCount(SLS, expected=5, absent=3, as_of=at(0), outcomes=outcomes)
    first = domain.RosterCount(SLS, expected=5, absent=1, as_of=at(0), outcomes={"moved": 1})
    completed = domain.RosterCount(SLS, expected=6, absent=2, as_of=at(-10), revision=1)
    assert domain.newer_roster(None, first) and domain.newer_roster(first, completed)
    assert not domain.newer_roster(completed, first)
    # verify's count wins; the outcomes stay those of the latest roster (sls-completed carries none)
    kept = domain.merged_roster(first, completed)
    assert (kept.expected, kept.absent, kept.outcomes) == (6, 2, {"moved": 1})
    later_roster = domain.RosterCount(SLS, expected=5, absent=2, as_of=at(5), outcomes={"moved": 2})
    kept = domain.merged_roster(kept, later_roster)
    assert (kept.expected, kept.revision, kept.outcomes) == (6, 1, {"moved": 2})


def test_field_outcome_codes_map_through_one_table_and_new_codes_need_only_an_entry():
    class Entry:  # a roster entry or interview carrying its own field outcome code (not on the contracts yet)
        def __init__(self, outcome=None, status=None):
            self.outcome, self.status = outcome, status

    assert domain.field_outcome(Entry(status="unknown")) == "not_found"
    assert domain.field_outcome(Entry(outcome="refused", status="present")) == "refused"
    assert domain.field_outcome(Entry(status="present")) is None and domain.field_outcome(Entry(outcome="x")) is None
    assert set(domain.FIELD_OUTCOMES.values()) <= set(domain.OUTCOMES)


def test_counts_change_follows_the_familys_state():
    s = apply(fresh(), domain.on_interview(fresh(), SUBMITTED, at(0)))
    first = domain.counts_change(SLS, None, s)
    assert (first.interviewed, first.verified, first.flagged) == (1, 0, 0) and sum(first.days.values()) == 1
    v = apply(s, domain.on_verified(s, verified(seq=1)))
    step = domain.counts_change(SLS, s, v)
    assert (step.interviewed, step.verified, step.flagged, step.days) == (0, 1, 0, {})
    gone = domain.counts_change(SLS, v, None)
    assert (gone.interviewed, gone.verified) == (-1, -1) and list(gone.days.values()) == [-1]


def test_progress_completion_and_behind_first():
    a = Progress("6472010", expected=10, interviewed=2, absent=1)
    b = Progress("6472020", expected=10, interviewed=9, absent=1)
    c = Progress("6472030", expected=0, interviewed=0)
    assert a.completion == 0.3 and a.to_interview == 7 and b.completion == 1.0
    assert [r.area for r in domain.behind_first([b, a, c])] == ["6472030", "6472010", "6472020"]
    assert domain.total("6472", [a, b]) == Progress("6472", 20, 11, 0, 0, 2, 0, 0, 0, 0)
    assert round(domain.plan_per_day(37, date(2022, 10, 15), date(2022, 11, 20)), 3) == 1.0


def test_the_daily_series_covers_the_collection_period():
    series = domain.daily_series([(date(2022, 10, 16), 4), (date(2022, 11, 22), 1)], date(2022, 10, 15), date(2022, 11, 20))
    assert series[0] == (date(2022, 10, 15), 0) and series[1] == (date(2022, 10, 16), 4)
    assert series[-1] == (date(2022, 11, 22), 1) and len(series) == 39


def test_scope_filters_by_area_and_role():
    supervisor = Principal("SPV", Role.SUPERVISOR, ("6472010", "6472011"))
    assert domain.area_scope(supervisor) == ("6472010", "6472011")
    assert domain.may_see(supervisor, "64720100010001") and not domain.may_see(supervisor, "64710100010001")
    assert domain.area_scope(Principal("OPS", Role.ADMIN, ())) is None
    assert domain.home_area(supervisor) == "6472"
    assert domain.home_area(Principal("D", Role.VILLAGE_OFFICIAL, ("6472010001",))) == "6472010001"
    programme = Principal("PKH", Role.PROGRAMME, ("64",), ("pkh",))
    assert [p for p in domain.Page if domain.may_open(programme, p)] == [domain.Page.INTEGRATOR]
    assert not domain.may_open(Principal("O", Role.OFFICER, ("64",)), domain.Page.WORKLIST)


def test_area_levels():
    assert domain.child_length("") == 2 and domain.child_length("6472") == 7 and domain.child_length(SLS) is None
    assert domain.child_level_name("64") == "regency" and domain.level_name("6472010") == "district"
    assert domain.valid_area("") and domain.valid_area("6472010") and not domain.valid_area("647")
    assert not domain.valid_area("64٧2")  # an Arabic-Indic digit is no area code
    assert domain.clip_to_level("64720") == "6472"


def test_received_time_falls_back_on_a_bad_envelope_time():
    assert domain.received_time("2022-10-20T02:00:00+00:00", at(9)) == at(0)
    assert domain.received_time("yesterday", at(9)) == at(9)
    assert domain.received_time("2022-10-20T02:00:00", at(9)) == at(9)  # no zone: not trusted
