"""The PMT model, poverty lines and eligibility rules as shipped, and their pure computations."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from classify.model import DATA, PmtModel, PovertyLines, RuleSet, components, features
from regsosek.contracts import FamilyInterview, HouseholdProfile, WelfareGroup, household_profile
from regsosek.contracts.interview import Asset
from regsosek.examples import family_interview

MODEL_FILE = DATA / "pmt-illustrative-2022.1.yaml"
LINES_FILE = DATA / "poverty-lines-2022.yaml"
RULES_FILE = DATA / "eligibility-2022.1.yaml"

MODEL = PmtModel.load(MODEL_FILE)
LINES = PovertyLines.load(LINES_FILE)
RULES = RuleSet.load(RULES_FILE)
RAW_MODEL = yaml.safe_load(MODEL_FILE.read_text())
RAW_LINES = yaml.safe_load(LINES_FILE.read_text())
RAW_RULES = yaml.safe_load(RULES_FILE.read_text())

SMOKE = family_interview()

# The smoke family's features worked out by hand from the form (interview day 2022-10-20:
# head 42, spouse 37, child 3; 36 m2 for 3 people; Samarinda is a kota). Unlisted features are 0.
SMOKE_FEATURES = {
    "log_household_size": math.log(3),
    "share_under_15": 1 / 3,
    "head_diploma_sd": 1.0,
    "head_works": 1.0,
    "head_agriculture": 1.0,
    "share_working": 1 / 3,
    "log_floor_area_per_capita": math.log(12),
    "wall_not_masonry": 1.0,
    "toilet_own": 1.0,
    "septic_tank": 1.0,
    "asset_motorbike": 1.0,
    "asset_smartphone": 1.0,
    "urban": 1.0,
}


def smoke(**economy) -> HouseholdProfile:
    """The smoke family as classify gets it from verify (its profile)."""
    d = copy.deepcopy(SMOKE)
    d["economy"].update(economy)
    return household_profile(FamilyInterview.model_validate(d))


# ------------------------------------------------------------------ data files


def test_model_file_loads():
    assert MODEL.version == RAW_MODEL["version"] == "pmt-illustrative-2022.1"
    assert MODEL.illustrative is True
    assert MODEL.intercept == RAW_MODEL["intercept"]
    assert MODEL.coefficients == {k: float(v) for k, v in RAW_MODEL["coefficients"].items()}
    assert len(MODEL.decile_cutpoints) == 9
    assert MODEL.decile_cutpoints == sorted(MODEL.decile_cutpoints)


def test_every_coefficient_names_a_computed_feature():
    computed = set(features(smoke()))
    assert set(MODEL.coefficients) == computed


def test_every_asset_feature_matches_an_asset_code():
    codes = {a.value for a in Asset}
    for name in MODEL.coefficients:
        if name.startswith("asset_"):
            assert name.removeprefix("asset_") in codes, name


def test_regency_effects_cover_the_intake_reference():
    from intake.domain import area_reference

    assert set(MODEL.regency_effects) == set(area_reference()["regencies"])
    assert LINES.regencies == {}  # no regency line is in the repository: each uses the province's


def test_lines_and_rules_load():
    assert LINES.version == "lines-2022.2"
    assert LINES.extreme_poor == 322170
    assert LINES.vulnerable_multiple == 1.5
    assert RULES.version == RAW_RULES["version"] == "rules-2022.2"
    assert [r.programme for r in RULES.rules] == list(RAW_RULES["programmes"])


def test_published_lines_and_their_source():
    """docs/DOMAIN.md: BPS, East Kalimantan, per capita per month: Rp728,208 (March 2022) and
    Rp768,120 (September 2022); extreme poverty Rp322,170/month. The data file cites only it."""
    assert RAW_LINES["provinces"]["64"] == {"march_2022": 728208, "september_2022": 768120}
    assert RAW_LINES["in_force"] == LINES.in_force == "september_2022"
    assert LINES.provinces == {"64": 768120}
    domain = (DATA.parents[4] / "docs" / "DOMAIN.md").read_text()
    for figure in ("Rp728,208", "Rp768,120", "Rp322,170/month", "Rp10,739/day"):
        assert figure in domain
    assert RAW_LINES["source"].startswith("docs/DOMAIN.md") and RAW_LINES["extreme_poor_source"].startswith("docs/DOMAIN.md")
    text = LINES_FILE.read_text() + RULES_FILE.read_text()
    assert "http" not in text and "ILLUSTRATIVE" not in text


# ------------------------------------------------------------------ golden case


def test_smoke_family_features_by_hand():
    f = features(smoke())
    expected = {k: SMOKE_FEATURES.get(k, 0.0) for k in f}
    assert f == pytest.approx(expected)


def test_smoke_family_prediction_golden():
    coef = RAW_MODEL["coefficients"]
    log_c = RAW_MODEL["intercept"] + sum(coef[k] * v for k, v in SMOKE_FEATURES.items()) + RAW_MODEL["regency_effects"]["6472"]
    expected = math.exp(log_c)
    predicted, contrib = MODEL.predict(features(smoke()), "6472")
    assert predicted == pytest.approx(expected, rel=1e-12)
    assert predicted == pytest.approx(519_231.43, abs=0.01)  # the same number written out
    assert contrib["regency_6472"] == 0.05
    assert contrib["asset_motorbike"] == coef["asset_motorbike"]
    assert contrib["asset_car"] == 0.0
    # welfare group from the poverty-lines file: East Kalimantan's September 2022 line, 768120
    assert RAW_LINES["extreme_poor"] <= predicted < RAW_LINES["provinces"]["64"]["september_2022"]
    assert LINES.group(predicted, "6472") is WelfareGroup.MISKIN
    # just under the first decile cut-point (520000)
    assert predicted <= RAW_MODEL["decile_cutpoints"][0]
    assert MODEL.provisional_decile(predicted) == 1


def test_smoke_family_components():
    assert components(smoke()) == {
        "pregnant_member": True,
        "child_under_6": True,
        "school_age_child": False,
        "school_age_child_attending": False,
        "member_60_plus": False,
        "severe_disability": False,
    }


def test_unknown_regency_has_no_effect():
    feats = features(smoke())
    p_known, _ = MODEL.predict(feats, "6472")
    p_unknown, contrib = MODEL.predict(feats, "9999")
    assert contrib["regency_9999"] == 0.0
    assert p_unknown == pytest.approx(p_known / math.exp(0.05))


# ------------------------------------------------------------------ assets property

POSITIVE_ASSETS = [a for a in Asset if MODEL.coefficients.get(f"asset_{a.value}", 0.0) > 0]
UNMODELLED_ASSETS = [a for a in Asset if f"asset_{a.value}" not in MODEL.coefficients]


def test_asset_partition_is_not_empty():
    assert len(POSITIVE_ASSETS) >= 10
    assert set(POSITIVE_ASSETS) | set(UNMODELLED_ASSETS) == set(Asset)


@settings(max_examples=200, deadline=None)
@given(base=st.sets(st.sampled_from(list(Asset))), added=st.sampled_from(POSITIVE_ASSETS),
       regency=st.sampled_from(["6401", "6472", "6411", "9999"]))
def test_adding_a_positive_asset_never_lowers_prediction(base, added, regency):
    base = base - {added}
    before, _ = MODEL.predict(features(smoke(assets=sorted(base))), regency)
    after, _ = MODEL.predict(features(smoke(assets=sorted(base | {added}))), regency)
    assert after > before
    assert math.log(after) - math.log(before) == pytest.approx(MODEL.coefficients[f"asset_{added.value}"])


@pytest.mark.parametrize("asset", UNMODELLED_ASSETS, ids=lambda a: a.value)
def test_unmodelled_asset_changes_nothing(asset):
    before, _ = MODEL.predict(features(smoke()), "6472")
    after, _ = MODEL.predict(features(smoke(assets=["motorbike", "smartphone", asset.value])), "6472")
    assert after == before


# ------------------------------------------------------------------ deciles

CUTS = RAW_MODEL["decile_cutpoints"]


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 1e8, allow_nan=False), st.floats(0, 1e8, allow_nan=False))
def test_provisional_decile_monotonic_and_in_range(a, b):
    lo, hi = sorted((a, b))
    d_lo, d_hi = MODEL.provisional_decile(lo), MODEL.provisional_decile(hi)
    assert 1 <= d_lo <= d_hi <= 10


@pytest.mark.parametrize("i", range(9))
def test_decile_cutpoints_are_inclusive_upper_bounds(i):
    cut = CUTS[i]
    assert MODEL.provisional_decile(cut) == i + 1
    assert MODEL.provisional_decile(cut + 0.01) == i + 2
    assert MODEL.provisional_decile(cut - 0.01) == i + 1


@pytest.mark.parametrize("c,decile", [(0.0, 1), (1.0, 1), (2_000_000.01, 10), (1e9, 10)])
def test_decile_extremes(c, decile):
    assert MODEL.provisional_decile(c) == decile


# ------------------------------------------------------------------ poverty lines

EXTREME = RAW_LINES["extreme_poor"]


@pytest.mark.parametrize("area", ["6472", "6471", "6474", "6403", "6411", "6401", "6410", "6472010001",
                                  "64720100010001"])
def test_every_area_of_the_province_has_its_published_line(area):
    assert LINES.poverty_line(area) == 768120


def test_urban_and_rural_lines_follow_the_village_not_the_regency(monkeypatch):
    """A regency's urban and rural lines, where the file has them, apply per village as the area
    reference classifies it: a rural village in a kota gets the rural line, an urban one in a
    kabupaten the urban line; a village it does not classify gets the province's line."""
    from regsosek import areas

    ref = areas.AreaReference()
    ref.add({"province": {"code": "64", "name": "KT"},
             "villages": {"6472010": "001-003", "6403010": "001-002"},
             "urban": {"6403010": "001"}, "rural": {"6472010": "002"}})
    monkeypatch.setattr(areas, "reference", lambda: ref)
    lines = PovertyLines(LINES.version, LINES.extreme_poor, LINES.vulnerable_multiple, LINES.provinces,
                         {"6472": {"urban": 800000, "rural": 700000}, "6403": {"urban": 790000, "rural": 690000}})
    assert lines.poverty_line("64720100020001") == 700000  # rural village of Samarinda (a kota)
    assert lines.poverty_line("64030100010001") == 790000  # urban village of Kutai Kartanegara
    assert lines.poverty_line("64720100030001") == 768120  # not classified: the province's line
    assert lines.poverty_line("6472") == 768120  # no village: the province's line
    assert features(smoke())["urban"] == 1.0  # the smoke family's village is not classified: the kota proxy
    rural_in_kota = smoke().model_copy(update={"sls_id": "64720100020001"})
    assert features(rural_in_kota)["urban"] == 0.0


def test_a_province_without_a_published_line_is_refused():
    with pytest.raises(ValueError, match="no poverty line for province 65"):
        LINES.poverty_line("6501")


@pytest.mark.parametrize("regency", ["6472", "6403", "6411", "6499"])
def test_group_boundaries(regency):
    line = LINES.poverty_line(regency)
    vuln = line * RAW_LINES["vulnerable_multiple"]
    eps = 0.01
    table = [
        (0.0, 1),
        (EXTREME - eps, 1),
        (EXTREME, 2),
        (line - eps, 2),
        (line, 3),
        (vuln - eps, 3),
        (vuln, 4),
        (vuln * 10, 4),
    ]
    assert [int(LINES.group(c, regency)) for c, _ in table] == [g for _, g in table]


# ------------------------------------------------------------------ rules

RULE = {r.programme: r for r in RULES.rules}
NO_COMPONENTS = {k: False for k in components(smoke())}


def comps(**present) -> dict[str, bool]:
    return {**NO_COMPONENTS, **present}


def test_programme_targeting_follows_the_domain_notes():
    """docs/DOMAIN.md, Classification: PKH deciles 1-4 with a component, Sembako deciles 1-5 (the
    guideline's "poorest quarter" is marked weak there and not applied), BLT-Desa the extreme poor,
    PBI-JKN the poor and vulnerable per person, PIP per student."""
    domain = (DATA.parents[4] / "docs" / "DOMAIN.md").read_text()
    text = " ".join(domain.split())
    assert "PKH conditional cash transfer deciles 1–4" in text and "Sembako food aid deciles 1–5" in text
    assert (RULE["pkh"].max_decile, RULE["sembako"].max_decile) == (4, 5)
    assert RULE["blt_desa"].max_welfare_group == int(WelfareGroup.SANGAT_MISKIN)
    assert RULE["pbi_jkn"].max_welfare_group == int(WelfareGroup.RENTAN_MISKIN)
    assert RULE["pbi_jkn"].per_member is not None and RULE["pip"].per_member is not None
    assert all(RULE[p].per_member is None for p in ("pkh", "sembako", "blt_desa"))
    assert "Sembako" in RULES_FILE.read_text() and "weak source" in RULES_FILE.read_text()


def test_rules_mirror_the_file():
    for name, spec in RAW_RULES["programmes"].items():
        r = RULE[name]
        assert r.max_decile == spec.get("max_decile")
        assert r.max_welfare_group == spec.get("max_welfare_group")
        assert r.requires_any == tuple(spec.get("requires_any", ()))
        assert r.name == spec["name"]


G = WelfareGroup


@pytest.mark.parametrize(
    "programme,decile,group,present,eligible",
    [
        # PKH: decile <= 4 and at least one component
        ("pkh", 4, G.TIDAK_MISKIN, {"child_under_6": True}, True),
        ("pkh", 1, G.SANGAT_MISKIN, {"pregnant_member": True}, True),
        ("pkh", 3, G.MISKIN, {"school_age_child": True}, True),
        ("pkh", 3, G.MISKIN, {"member_60_plus": True}, True),
        ("pkh", 3, G.MISKIN, {"severe_disability": True}, True),
        ("pkh", 5, G.SANGAT_MISKIN, {"child_under_6": True}, False),  # decile too high
        ("pkh", 1, G.SANGAT_MISKIN, {}, False),  # no component
        ("pkh", 9, G.TIDAK_MISKIN, {}, False),  # both missing
        ("pkh", 2, G.MISKIN, {"school_age_child_attending": True}, False),  # not a PKH component
        # Sembako: decile <= 5
        ("sembako", 5, G.TIDAK_MISKIN, {}, True),
        ("sembako", 1, G.SANGAT_MISKIN, {}, True),
        ("sembako", 6, G.SANGAT_MISKIN, {}, False),
        # BLT-Desa: only welfare group 1
        ("blt_desa", 10, G.SANGAT_MISKIN, {}, True),
        ("blt_desa", 1, G.MISKIN, {}, False),
        ("blt_desa", 1, G.TIDAK_MISKIN, {}, False),
        # PBI-JKN: group <= 3
        ("pbi_jkn", 10, G.RENTAN_MISKIN, {}, True),
        ("pbi_jkn", 10, G.SANGAT_MISKIN, {}, True),
        ("pbi_jkn", 1, G.TIDAK_MISKIN, {}, False),
        # PIP: decile <= 4 and an attending school-age child
        ("pip", 4, G.TIDAK_MISKIN, {"school_age_child_attending": True}, True),
        ("pip", 4, G.MISKIN, {"school_age_child": True}, False),
        ("pip", 4, G.MISKIN, {}, False),
        ("pip", 5, G.MISKIN, {"school_age_child_attending": True}, False),
    ],
)
def test_rule_table(programme, decile, group, present, eligible):
    ok, reasons = RULE[programme].decide(decile, group, comps(**present))
    assert ok is eligible
    assert reasons


def test_reasons_mention_thresholds():
    ok, reasons = RULE["pkh"].decide(9, G.TIDAK_MISKIN, comps())
    assert not ok
    assert reasons == [
        "decile 9 > 4",
        "none of the components: pregnant_member, child_under_6, school_age_child, member_60_plus, severe_disability",
    ]
    ok, reasons = RULE["pkh"].decide(2, G.MISKIN, comps(child_under_6=True, member_60_plus=True))
    assert ok and reasons == ["decile 2 <= 4", "components present: child_under_6, member_60_plus"]
    assert RULE["sembako"].decide(5, G.MISKIN, comps()) == (True, ["decile 5 <= 5"])
    assert RULE["sembako"].decide(6, G.MISKIN, comps()) == (False, ["decile 6 > 5"])
    assert RULE["blt_desa"].decide(1, G.MISKIN, comps()) == (False, ["welfare group 2 > 1"])
    assert RULE["pbi_jkn"].decide(1, G.RENTAN_MISKIN, comps()) == (True, ["welfare group 3 <= 3"])
    assert RULE["pip"].decide(4, G.MISKIN, comps()) == (
        False, ["decile 4 <= 4", "none of the components: school_age_child_attending"])


@pytest.mark.parametrize(
    "dobs,school,expected_school_age,expected_attending",
    [
        (["2016-10-20"], "attending", True, True),  # exactly 6
        (["2016-10-21"], "attending", False, False),  # one day short of 6
        (["2000-10-21"], "attending", True, True),  # 21, a day before turning 22
        (["2000-10-20"], "attending", False, False),  # turned 22 on the interview day
        (["2010-01-01"], "not_anymore", True, False),
    ],
)
def test_school_age_components(dobs, school, expected_school_age, expected_attending):
    d = copy.deepcopy(SMOKE)
    d["members"] = d["members"][:2]
    for i, dob in enumerate(dobs):
        d["members"].append({"line_no": 3 + i, "name": "C", "sex": "male", "date_of_birth": dob, "relationship": "child",
                             "marital_status": "never_married", "school": school, "highest_diploma": "none",
                             "worked_last_week": False})
    c = components(household_profile(FamilyInterview.model_validate(d)))
    assert c["school_age_child"] is expected_school_age
    assert c["school_age_child_attending"] is expected_attending
