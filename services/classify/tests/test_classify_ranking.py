"""Deciles by ranking (pure): sizes, order, cut-points, and how FKP decisions bound the rank value."""

from __future__ import annotations

import copy
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classify.domain import classify, fkp_note
from classify.model import DATA, PmtModel, PovertyLines, RuleSet
from classify.ranking import (
    NATIONAL,
    CutPoints,
    Ranked,
    cutpoints,
    decile_at,
    partition_of,
    rank_deciles,
    rank_value,
    reference_placement,
)
from regsosek.contracts import FamilyInterview, HouseholdProfile, WelfareGroup, household_profile
from regsosek.examples import family_interview

MODEL = PmtModel.load(DATA / "pmt-illustrative-2022.1.yaml")
LINES = PovertyLines.load(DATA / "poverty-lines-2022.yaml")
RULES = RuleSet.load(DATA / "eligibility-2022.1.yaml")


def sizes(deciles: dict[str, int]) -> Counter:
    return Counter(deciles.values())


def test_large_sample_holds_exactly_ten_percent_per_decile():
    rng = random.Random(2022)
    values = [(f"f{i:06d}", math.exp(rng.gauss(13.7, 0.5))) for i in range(100_000)]
    d = rank_deciles(values)
    assert sizes(d) == {k: 10_000 for k in range(1, 11)}
    ordered = sorted(values, key=lambda kv: kv[1])
    assert d[ordered[0][0]] == 1 and d[ordered[-1][0]] == 10
    assert d[ordered[9_999][0]] == 1 and d[ordered[10_000][0]] == 2


@settings(max_examples=150, deadline=None)
@given(n=st.integers(10, 3000), seed=st.integers(0, 2**32 - 1), distinct=st.integers(1, 50))
def test_decile_sizes_within_one_of_a_tenth_even_with_ties(n, seed, distinct):
    rng = random.Random(seed)
    # few distinct values force ties across decile boundaries
    values = [(f"f{i:05d}", float(rng.randint(1, distinct) * 100_000)) for i in range(n)]
    d = rank_deciles(values)
    counts = sizes(d)
    assert set(counts) == set(range(1, 11))
    assert all(math.floor(n / 10) <= counts[k] <= math.ceil(n / 10) for k in range(1, 11))
    assert sum(counts.values()) == n
    # order: a lower rank value never has a higher decile
    by_value = sorted(values, key=lambda kv: kv[1])
    for (fa, va), (fb, vb) in zip(by_value, by_value[1:], strict=False):
        if va < vb:
            assert d[fa] <= d[fb]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1.0, 1e8, allow_nan=False), min_size=10, max_size=500, unique=True))
def test_cutpoints_place_each_ranked_family_in_its_decile(raw):
    values = [(f"f{i:04d}", v) for i, v in enumerate(raw)]
    d = rank_deciles(values)
    cuts = cutpoints(values, d)
    assert len(cuts) == 9 and cuts == sorted(cuts)
    placement = CutPoints(tuple(cuts), "b")
    for fid, v in values:
        assert placement.place(v) == (d[fid], "b")


def test_ranking_is_deterministic_and_ties_split_by_family_id():
    values = [("b", 5.0), ("a", 5.0), ("c", 1.0)] + [(f"z{i}", 10.0 + i) for i in range(7)]
    assert rank_deciles(values) == rank_deciles(list(reversed(values)))
    d = rank_deciles(values)
    assert (d["c"], d["a"], d["b"]) == (1, 2, 3)


def test_small_populations_leave_some_deciles_empty():
    assert rank_deciles([("a", 3.0), ("b", 1.0), ("c", 2.0)]) == {"b": 1, "c": 4, "a": 7}
    assert rank_deciles([("only", 9.0)]) == {"only": 1}
    assert rank_deciles([]) == {}
    with pytest.raises(ValueError):
        decile_at(3, 3)


def test_partitions():
    assert partition_of("national", "64720100010001") == NATIONAL
    assert partition_of("province", "64720100010001") == "64"
    assert partition_of("regency", "64720100010001") == "6472"  # the final ranking is per regency/city
    with pytest.raises(ValueError):
        partition_of("district", "6472")


# ------------------------------------------------------------------ FKP bounds the rank value


@settings(max_examples=300, deadline=None)
@given(predicted=st.floats(1.0, 2e7, allow_nan=False), group=st.sampled_from(list(WelfareGroup)),
       regency=st.sampled_from(["6401", "6411", "6472", "6474", "6499"]))
def test_fkp_rank_value_lies_in_the_chosen_group(predicted, group, regency):
    v = rank_value(predicted, group, regency, LINES)
    low, high = LINES.band(group, regency)
    assert low <= v < high
    assert LINES.group(v, regency) is group  # ranked as the village decided
    if low <= predicted < high:
        assert v == predicted  # already there: untouched


@settings(max_examples=200, deadline=None)
@given(a=st.floats(1.0, 2e7, allow_nan=False), b=st.floats(1.0, 2e7, allow_nan=False),
       group=st.sampled_from([None, *WelfareGroup]))
def test_rank_value_is_monotonic_in_predicted_consumption(a, b, group):
    lo, hi = sorted((a, b))
    assert rank_value(lo, group, "6472", LINES) <= rank_value(hi, group, "6472", LINES)


def test_no_fkp_rank_value_is_the_prediction():
    assert rank_value(519_231.4, None, "6472", LINES) == 519_231.4


# ------------------------------------------------------------------ classification with a ranked decile


def smoke() -> HouseholdProfile:
    return household_profile(FamilyInterview.model_validate(copy.deepcopy(family_interview())))


def test_ranked_placement_decides_eligibility():
    provisional = classify(smoke(), MODEL, LINES, RULES)
    assert provisional.decile == 1
    assert provisional.decile_basis == f"provisional: reference cut-points of {MODEL.version}"
    ranked = classify(smoke(), MODEL, LINES, RULES, placement=Ranked(6, "ranked: national at T among 10 families", 3))
    assert ranked.decile == 6 and ranked.decile_basis == "ranked: national at T among 10 families"
    assert ranked.predicted == provisional.predicted and ranked.welfare_group == provisional.welfare_group
    assert ranked.eligibility == {"pkh": False, "sembako": False, "pbi_jkn": True, "blt_desa": False, "pip": False}
    assert ranked.outcome() != provisional.outcome()
    pkh = next(d for d in ranked.decisions if d.programme == "pkh")
    assert pkh.reasons[0] == "decile 6 > 4"


def test_fkp_note_is_kept_once_when_a_basis_is_carried_over():
    c = classify(smoke(), MODEL, LINES, RULES, WelfareGroup.SANGAT_MISKIN)
    again = classify(smoke(), MODEL, LINES, RULES, WelfareGroup.SANGAT_MISKIN, Ranked(c.decile, c.decile_basis))
    assert again.decile_basis == c.decile_basis
    assert again.decile_basis.count("village consultation") == 1
    assert fkp_note(c.decile_basis) == "; ranked within welfare group 1 set by village consultation (FKP)"
    assert fkp_note("ranked: national at T among 3 families") == ""
    moved = classify(smoke(), MODEL, LINES, RULES, WelfareGroup.TIDAK_MISKIN, Ranked(c.decile, c.decile_basis))
    assert moved.decile_basis.endswith("welfare group 4 set by village consultation (FKP)")
    assert moved.decile_basis.count("village consultation") == 1


def test_every_decile_basis_classify_writes_is_one_the_console_can_word():
    """Each basis (regsosek.contracts.details) reads back as its template; with an FKP group too."""
    from datetime import UTC, datetime

    from classify.store import ranked_basis, ranking_cuts_basis
    from regsosek.contracts.details import read_detail

    at = datetime(2022, 11, 1, 8, 30, tzinfo=UTC)
    made = {"basis_reference": reference_placement(MODEL.version, MODEL.decile_cutpoints).basis}
    for partition, scope in (("ID", "scope_national"), ("64", "scope_province"), ("6472", "scope_regency")):
        made[f"basis_ranked/{scope}"] = ranked_basis(partition, at, 12, None)
        made[f"basis_ranked_area/{scope}"] = ranked_basis(partition, at, 12, "6472")
        made[f"basis_ranking_cuts/{scope}"] = ranking_cuts_basis(partition, at, 12)
    for key, basis in made.items():
        code, _, scope = key.partition("/")
        for text in (basis, classify(smoke(), MODEL, LINES, RULES, fkp_group=WelfareGroup(2),
                                     placement=CutPoints(tuple(MODEL.decile_cutpoints), basis)).decile_basis):
            found = read_detail(text)
            assert found is not None, key
            if text != basis:  # the FKP note around the basis
                assert (found[0].code, found[1]["group"]) == ("basis_within_fkp_group", "2")
                found = read_detail(found[1]["basis"])
            assert found[0].code == code
            if scope:
                assert read_detail(found[1]["scope"])[0].code == scope


def test_the_sql_that_reads_a_basis_matches_the_templates_prefixes():
    """classify's store and migrations find a ranked basis and its FKP note by their words; those words
    are the templates' (regsosek.contracts.details), so rewording a template fails here first."""
    from pathlib import Path

    import classify.store as store_module
    from classify.domain import FKP_NOTE
    from regsosek.contracts import details as dt

    ranked = dt.BASIS_RANKED.text.split("{")[0]
    fkp = dt.BASIS_WITHIN_FKP_GROUP.text.split("{group}")[0].removeprefix("{basis}")
    reference = dt.BASIS_REFERENCE.text.split("{")[0]
    assert FKP_NOTE.split("{}")[0] == fkp
    store_sql = Path(store_module.__file__).read_text(encoding="utf-8")
    migrations = Path(store_module.__file__).resolve().parents[2] / "migrations"
    assert f"like '{ranked}%'" in store_sql
    assert f"like '{ranked}%'" in (migrations / "011_rerank_confirms.sql").read_text(encoding="utf-8")
    assert f"'{fkp.rstrip()}'" in (migrations / "011_rerank_confirms.sql").read_text(encoding="utf-8")
    assert f"'{reference}'" in (migrations / "002_ranking_replay.sql").read_text(encoding="utf-8")
