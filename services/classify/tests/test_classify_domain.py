"""Classifying one family end to end with the shipped data, including FKP overrides."""

from __future__ import annotations

import copy

import pytest

from classify.domain import TOP_FACTORS, classify
from classify.model import DATA, PmtModel, PovertyLines, RuleSet, features
from regsosek.contracts import FamilyInterview, HouseholdProfile, WelfareGroup, household_profile
from regsosek.examples import family_interview

MODEL = PmtModel.load(DATA / "pmt-illustrative-2022.1.yaml")
LINES = PovertyLines.load(DATA / "poverty-lines-2022.yaml")
RULES = RuleSet.load(DATA / "eligibility-2022.1.yaml")
FKP_TEXT = "set by village consultation (FKP)"

# The family of the local smoke run.
SMOKE = family_interview()


def smoke() -> HouseholdProfile:
    return household_profile(FamilyInterview.model_validate(copy.deepcopy(SMOKE)))


def decisions(c) -> dict[str, bool]:
    return {d.programme: d.eligible for d in c.decisions}


def test_smoke_family_golden_classification():
    c = classify(smoke(), MODEL, LINES, RULES)
    assert c.predicted == pytest.approx(519_231.43, abs=0.01)
    assert c.welfare_group is WelfareGroup.MISKIN
    assert c.decile == 1
    assert c.adjusted_by_fkp is False
    assert decisions(c) == {"pkh": True, "sembako": True, "pbi_jkn": True, "blt_desa": False, "pip": False}
    for d in c.decisions:
        assert d.rule_version == RULES.version
        assert d.reasons
        assert not any(FKP_TEXT in r for r in d.reasons)
    by = {d.programme: d for d in c.decisions}
    assert by["pkh"].reasons == ["decile 1 <= 4", "components present: pregnant_member, child_under_6"]
    assert by["blt_desa"].reasons == ["welfare group 2 > 1"]
    assert by["pip"].reasons == ["decile 1 <= 4", "none of the components: school_age_child_attending"]


def test_explanation_is_top_factors_by_magnitude():
    iv = smoke()
    c = classify(iv, MODEL, LINES, RULES)
    _, contrib = MODEL.predict(features(iv), "6472")
    nonzero = sorted((abs(v) for v in contrib.values() if v != 0.0), reverse=True)
    assert len(c.explanation) == TOP_FACTORS
    assert [abs(e.effect) for e in c.explanation] == pytest.approx(nonzero[:TOP_FACTORS], abs=1e-4)
    assert all(e.effect != 0.0 for e in c.explanation)
    assert all(e.factor in contrib for e in c.explanation)
    # the largest single effect for this family is household size
    assert c.explanation[0].factor == "log_household_size"


@pytest.mark.parametrize(
    "fkp,decile,expected",
    [
        # extreme poor: ranked just under the extreme line 322,170 -> decile 1
        (WelfareGroup.SANGAT_MISKIN, 1, {"pkh": True, "sembako": True, "pbi_jkn": True, "blt_desa": True, "pip": False}),
        # not poor: ranked at the vulnerability line 790,000 x 1.5 = 1,185,000 -> reference decile 7
        (WelfareGroup.TIDAK_MISKIN, 7, {"pkh": False, "sembako": False, "pbi_jkn": False, "blt_desa": False, "pip": False}),
        # vulnerable: ranked at the poverty line 790,000 -> reference decile 4
        (WelfareGroup.RENTAN_MISKIN, 4, {"pkh": True, "sembako": True, "pbi_jkn": True, "blt_desa": False, "pip": False}),
    ],
)
def test_fkp_override_changes_group_rank_and_adds_reason(fkp, decile, expected):
    base = classify(smoke(), MODEL, LINES, RULES)
    c = classify(smoke(), MODEL, LINES, RULES, fkp_group=fkp)
    assert c.welfare_group is fkp
    assert c.adjusted_by_fkp is True
    assert c.predicted == base.predicted  # the model's number is kept and reported
    low, high = LINES.band(fkp, "6472")
    assert low <= c.rank_value < high  # the family is ranked inside the group the village chose
    assert c.decile == decile
    assert decisions(c) == expected
    assert c.decile_basis.endswith(f"ranked within welfare group {int(fkp)} set by village consultation (FKP)")
    for d in c.decisions:
        assert d.reasons[-1] == f"welfare group {int(fkp)} {FKP_TEXT}"


def test_fkp_same_group_still_marked_adjusted():
    base = classify(smoke(), MODEL, LINES, RULES)
    c = classify(smoke(), MODEL, LINES, RULES, fkp_group=WelfareGroup.MISKIN)
    assert c.adjusted_by_fkp is True
    assert c.rank_value == base.rank_value == base.predicted  # already inside group 2's range: rank unchanged
    assert c.decile == base.decile
    assert all(FKP_TEXT in d.reasons[-1] for d in c.decisions)


# ------------------------------------------------------------------ individual programmes, per member


def with_members(*members: dict) -> HouseholdProfile:
    """The smoke family's profile with these members (ProfileMember fields over a default adult)."""
    base = smoke().model_dump()
    adult = {**base["members"][0]}
    base["members"] = [{**adult, "line_no": row, **m} for row, m in enumerate(members, start=1)]
    return HouseholdProfile.model_validate(base)


def by_member(c, programme: str) -> list[tuple[int, bool]]:
    return [(m.line_no, m.eligible) for m in c.member_decisions if m.programme == programme]


def test_pbi_jkn_is_decided_for_every_member_of_a_poor_family_with_their_reasons():
    p = smoke()
    c = classify(p, MODEL, LINES, RULES)
    assert c.welfare_group is WelfareGroup.MISKIN
    assert by_member(c, "pbi_jkn") == [(n, True) for n in range(1, len(p.members) + 1)]
    assert c.member_decisions[0].reasons == ["welfare group 2 <= 3", "every member of an eligible family"]
    assert {m.programme for m in c.member_decisions} == {"pbi_jkn", "pip"}  # family programmes have none
    assert all(m.rule_version == RULES.version for m in c.member_decisions)


def test_pip_covers_only_members_of_school_age_attending_school():
    p = with_members({"relationship": "head", "age": 40, "school": "not_anymore"},
                     {"relationship": "child", "age": 10, "school": "attending"},
                     {"relationship": "child", "age": 16, "school": "not_anymore"},
                     {"relationship": "child", "age": 4, "school": "never"})
    c = classify(p, MODEL, LINES, RULES)
    assert c.decile <= 4
    assert by_member(c, "pip") == [(1, False), (2, True), (3, False), (4, False)]
    assert decisions(c)["pip"] is True  # the family-level decision: some member is covered
    second = next(m for m in c.member_decisions if m.programme == "pip" and m.line_no == 2)
    assert second.reasons == [f"decile {c.decile} <= 4", "age within 6-21", "school participation attending in attending"]
    third = next(m for m in c.member_decisions if m.programme == "pip" and m.line_no == 3)
    assert "school participation not_anymore not in attending" in third.reasons


def test_no_member_is_covered_when_the_family_is_above_the_threshold():
    p = with_members({"relationship": "head", "age": 40}, {"relationship": "child", "age": 10, "school": "attending"})
    c = classify(p, MODEL, LINES, RULES, fkp_group=WelfareGroup.TIDAK_MISKIN)
    assert by_member(c, "pbi_jkn") == [(1, False), (2, False)]
    assert all(FKP_TEXT in m.reasons[-1] for m in c.member_decisions)
    assert decisions(c)["pbi_jkn"] is False


def test_a_members_change_alone_changes_the_outcome_that_re_rank_and_replay_compare():
    two_pupils = with_members({"relationship": "head", "age": 40}, {"relationship": "child", "age": 10, "school": "attending"},
                              {"relationship": "child", "age": 12, "school": "attending"})
    one_pupil = with_members({"relationship": "head", "age": 40}, {"relationship": "child", "age": 10, "school": "attending"},
                             {"relationship": "child", "age": 12, "school": "not_anymore"})
    a, b = classify(two_pupils, MODEL, LINES, RULES), classify(one_pupil, MODEL, LINES, RULES)
    assert a.decile == b.decile and a.eligibility == b.eligibility  # the family-level decisions are the same
    assert a.member_eligibility["pip:3"] is True and b.member_eligibility["pip:3"] is False
    assert a.outcome() != b.outcome()
