"""Classifying one family end to end with the shipped data, including FKP overrides."""

from __future__ import annotations

import copy

import pytest

from regsosek.contracts import FamilyInterview, WelfareGroup
from classify.domain import TOP_FACTORS, classify
from classify.model import DATA, PmtModel, PovertyLines, RuleSet, features
from regsosek.examples import family_interview

MODEL = PmtModel.load(DATA / "pmt-illustrative-2022.1.yaml")
LINES = PovertyLines.load(DATA / "poverty-lines-2022.yaml")
RULES = RuleSet.load(DATA / "eligibility-2022.1.yaml")
FKP_TEXT = "set by village consultation (FKP)"

# The family of the local smoke run.
SMOKE = family_interview()


def smoke() -> FamilyInterview:
    return FamilyInterview.model_validate(copy.deepcopy(SMOKE))


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
    "fkp,expected",
    [
        (WelfareGroup.SANGAT_MISKIN, {"pkh": True, "sembako": True, "pbi_jkn": True, "blt_desa": True, "pip": False}),
        (WelfareGroup.TIDAK_MISKIN, {"pkh": True, "sembako": True, "pbi_jkn": False, "blt_desa": False, "pip": False}),
        (WelfareGroup.RENTAN_MISKIN, {"pkh": True, "sembako": True, "pbi_jkn": True, "blt_desa": False, "pip": False}),
    ],
)
def test_fkp_override_changes_group_and_adds_reason(fkp, expected):
    base = classify(smoke(), MODEL, LINES, RULES)
    c = classify(smoke(), MODEL, LINES, RULES, fkp_group=fkp)
    assert c.welfare_group is fkp
    assert c.adjusted_by_fkp is True
    assert c.predicted == base.predicted and c.decile == base.decile  # FKP moves the group only
    assert decisions(c) == expected
    for d in c.decisions:
        assert d.reasons[-1] == f"welfare group {int(fkp)} {FKP_TEXT}"


def test_fkp_same_group_still_marked_adjusted():
    c = classify(smoke(), MODEL, LINES, RULES, fkp_group=WelfareGroup.MISKIN)
    assert c.adjusted_by_fkp is True
    assert all(FKP_TEXT in d.reasons[-1] for d in c.decisions)
