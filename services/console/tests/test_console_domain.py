"""The read model's projection (order-tolerant, by decision sequence), scope and progress, pure."""

from __future__ import annotations

import uuid
from datetime import date

from console import domain
from console.domain import FamilyState, Progress, VerifyState
from regsosek.auth import Principal, Role
from regsosek.contracts import InterviewResult, RosterSubmitted, SlsCompleted
from regsosek.contracts.pseudonymous import PseudonymousRosterFamily

from console_events import FAMILY, SLS, SUBMITTED, at, classified, eligibility, flagged, non_response, resolution, verified


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
    outcomes = {"moved": 1, "dissolved": 1, "not_found": 1}
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


def test_the_roster_status_of_a_family_not_reached_maps_through_one_table():
    class Entry:
        def __init__(self, status):
            self.status = status

    assert domain.field_outcome(Entry("unknown")) == "not_found" and domain.field_outcome(Entry("moved")) == "moved"
    assert domain.field_outcome(Entry("present")) is None and domain.field_outcome(Entry("added")) is None
    assert set(domain.ROSTER_OUTCOMES.values()) <= set(domain.OUTCOMES)


def test_sls_completed_takes_the_non_responses_out_of_the_absent():
    done = SlsCompleted(sls_id=SLS, roster_revision=1, roster_submission_id=uuid.uuid4(), expected=10, interviewed=6,
                        verified=6, flagged=0, absent=4, non_response=3, completed_at=at(9))
    count = domain.completed_count(done)
    assert (count.absent, count.non_response, count.confirmed_absent) == (4, 3, 1)
    # an event from before the field: every absent family counts as confirmed absent
    assert domain.completed_count(done.model_copy(update={"non_response": 0})).confirmed_absent == 4


def test_counts_change_follows_the_familys_state():
    s = apply(fresh(), domain.on_interview(fresh(), SUBMITTED, at(0)))
    first = domain.counts_change(SLS, None, s)
    assert figures(first) == {"interviewed": 1} and sum(first.days.values()) == 1
    v = apply(s, domain.on_verified(s, verified(seq=1)))
    step = domain.counts_change(SLS, s, v)
    assert (figures(step), step.days) == ({"verified": 1}, {})
    gone = domain.counts_change(SLS, v, None)
    assert figures(gone) == {"interviewed": -1, "verified": -1} and list(gone.days.values()) == [-1]


def figures(c: domain.CountsChange) -> dict[str, int]:
    return {f: n for f, n in c.figures.items() if n}


def test_a_refused_family_counts_as_refused_not_as_interviewed():
    refused = apply(fresh(), domain.on_interview(fresh(), non_response("refused", version=1), at(0)))
    assert refused.result == "refused" and not domain.responded(refused)
    assert domain.counts_of(refused).figures == {"refused": 1}
    # its revisit answered (a new version): interviewed, and verify's decision counts again
    revisit = SUBMITTED.model_copy(update={"version": 2})
    answered = apply(refused, domain.on_interview(refused, revisit, at(5)))
    answered = apply(answered, domain.on_verified(answered, verified(seq=2)))
    assert figures(domain.counts_change(SLS, refused, answered)) == {"interviewed": 1, "verified": 1, "refused": -1}
    # an older version's result arriving late changes nothing
    assert domain.on_interview(answered, non_response("moved", version=1), at(6)).state is None


def test_each_result_counts_in_one_figure():
    expected = {"complete": "interviewed", "partly_complete": "interviewed", "refused": "refused", "moved": "moved",
                "not_found": "not_found", "no_competent_respondent": "no_respondent"}
    assert expected == domain.RESULT_FIGURES and set(domain.RESULT_FIGURES) == {r.value for r in InterviewResult}
    # a family seen first through verify (its form not consumed yet) responded: verify decides only on those
    seen_by_verify = apply(fresh(), domain.on_verified(fresh(), verified(seq=1)))
    assert domain.counts_of(seen_by_verify).figures == {"interviewed": 1, "verified": 1, "flagged": 0}
    # a non-response keeps verify's earlier decision on its row but counts neither verified nor flagged
    moved = apply(seen_by_verify, domain.on_interview(seen_by_verify, non_response("moved"), at(3)))
    assert moved.verify_state is VerifyState.VERIFIED and domain.counts_of(moved).figures == {"moved": 1}


def test_progress_completion_and_behind_first():
    a = Progress("6472010", expected=10, interviewed=2, refused=1, not_reached=1, absent=1)
    b = Progress("6472020", expected=10, interviewed=9, not_reached=1, absent=1)
    c = Progress("6472030", expected=0, interviewed=0)
    assert a.completion == 0.4 and a.to_interview == 6 and b.completion == 1.0
    assert [r.area for r in domain.behind_first([b, a, c])] == ["6472030", "6472010", "6472020"]
    assert domain.total("6472", [a, b]) == Progress("6472", expected=20, interviewed=11, refused=1, not_reached=2,
                                                    absent=2)
    assert round(domain.plan_per_day(37, date(2022, 10, 15), date(2022, 11, 20)), 3) == 1.0


def test_small_counts_are_withheld_in_one_sls_and_the_totals_do_not_give_them_back():
    one = Progress("64720100010001", expected=8, interviewed=5, verified=4, flagged=1, refused=1, not_reached=2,
                   moved=2, absent=0, sls=1)
    assert domain.withheld(one) == {"flagged", "verified", *domain.NON_RESPONSE}
    # 0 and 5 or more single nobody out
    big = Progress("64720100010002", expected=20, interviewed=15, verified=15, refused=5, sls=1)
    assert domain.withheld(big) == frozenset()
    # a village with several SLS is no one-SLS cell, but its totals hide what exactly one SLS row hid
    village = domain.total("6472010001", [one, big])
    d = domain.disclosure(village, [one, big], exact=False)
    assert d.of(one.area) == domain.withheld(one) and d.of(big.area) == frozenset()
    assert d.total == domain.withheld(one)
    # a village where only one SLS has figures is a one-SLS cell itself
    assert domain.withheld(Progress("6472010001", refused=2, sls=1)) >= {"refused", "completion"}
    shown = domain.shown(one, d.of(one.area))
    assert shown["refused"] is None and shown["verified"] is None and shown["completion"] is None
    assert shown["interviewed"] == 5 and shown["expected"] == 8


def test_supervisors_see_exact_figures_and_everyone_else_the_withheld_ones():
    rows = [Progress("64720100010001", expected=3, interviewed=2, verified=1, flagged=1, refused=1, sls=1)]
    overall = domain.total("6472010001", rows)
    assert domain.disclosure(overall, rows, exact=True) == domain.Disclosure()
    for role in (Role.ADMIN, Role.OFFICER, Role.VILLAGE_OFFICIAL):
        areas = () if role is Role.ADMIN else ("6472010001",)
        p = Principal(subject="X", role=role, areas=areas)
        assert not domain.exact_counts(p)
        assert "refused" in domain.disclosure(overall, rows, domain.exact_counts(p)).of(rows[0].area)
    assert domain.exact_counts(Principal(subject="SPV", role=Role.SUPERVISOR, areas=("6472010001",)))


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
