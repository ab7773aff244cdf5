"""The replay's page-at-a-time decisions (classify.replay_domain) against the per-family classification
(`Config.classify`): over generated profiles and stored states, a family the fast path calls unchanged is
one the per-family path stores with exactly the same values and does not publish, and a family it sends
the per-family way is one whose outcome (or stored list of eligible programmes) did change."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classify.app import load_config
from classify.domain import Config
from classify.model import MemberRule, RuleSet, components, features
from classify.ranking import CutPoints, Placement, Ranked
from classify.replay_domain import ReplayJudge, StoredOutcome, components_of, features_of
from classify.settings import ClassifySettings
from regsosek.contracts import HouseholdProfile, WelfareGroup, household_profile
from regsosek.contracts.interview import (
    Asset,
    CookingFuel,
    DifficultyLevel,
    Diploma,
    InstalledPower,
    Relationship,
    SchoolParticipation,
    WaterSource,
)
from regsosek_tools.sample import generate

CONFIG = load_config(ClassifySettings())
PROFILES = [household_profile(iv) for iv in generate(16, 240).interviews]
CUTS = CutPoints(tuple(float(c) for c in (3e5, 4e5, 5e5, 6e5, 7e5, 8e5, 9e5, 1.1e6, 1.5e6)),
                 "provisional: cut-points of the regency 6401 ranking at 2026-12-01T00:00:00Z among 5 families", 41)


def other_rules(cfg: Config, max_decile: int) -> Config:
    """The configuration with PKH's and PIP's decile threshold moved (stored states from older rules)."""
    rules = tuple(dataclasses.replace(r, max_decile=max_decile) if r.programme in ("pkh", "pip") else r
                  for r in cfg.rules.rules)
    return dataclasses.replace(cfg, rules=RuleSet(cfg.rules.version + "-old", rules))


def other_member_rules(cfg: Config) -> Config:
    """PBI-JKN covering members from age 30 only: member decisions differ, the family decisions do not."""
    rules = tuple(dataclasses.replace(r, per_member=MemberRule(min_age=30)) if r.programme == "pbi_jkn" else r
                  for r in cfg.rules.rules)
    return dataclasses.replace(cfg, rules=RuleSet(cfg.rules.version + "-members", rules))


def reordered(cfg: Config) -> Config:
    """The same rules in another order (a rules file written with its programmes sorted)."""
    rules = tuple(sorted(cfg.rules.rules, key=lambda r: r.programme))
    return dataclasses.replace(cfg, rules=RuleSet(cfg.rules.version + "-sorted", rules))


@st.composite
def profiles(draw) -> HouseholdProfile:
    """A generated family, with some answers redrawn (ages, school, pregnancy, difficulty, diploma, housing,
    assets, livestock) and some documents as older versions stored them (no line numbers)."""
    p = draw(st.sampled_from(PROFILES))
    doc = p.model_dump(mode="json")
    for m in doc["members"]:
        if draw(st.booleans()):
            m["age"] = draw(st.integers(0, 95))
            m["school"] = draw(st.sampled_from([s.value for s in SchoolParticipation]))
            m["pregnant"] = draw(st.booleans())
            m["difficulty"] = draw(st.sampled_from([d.value for d in DifficultyLevel]))
            m["highest_diploma"] = draw(st.sampled_from([d.value for d in Diploma]))
        if draw(st.booleans()) and m["relationship"] == Relationship.HEAD.value:
            m["relationship"] = Relationship.OTHER_RELATIVE.value  # a family without a head: the first member
    if draw(st.booleans()):
        for m in doc["members"]:
            m.pop("line_no", None)
    h = doc["housing"]
    h["drinking_water"] = draw(st.sampled_from([w.value for w in WaterSource]))
    h["cooking_fuel"] = draw(st.sampled_from([f.value for f in CookingFuel]))
    h["installed_power"] = draw(st.sampled_from([None, *(v.value for v in InstalledPower)]))
    h["floor_area_m2"] = draw(st.floats(1.0, 400.0))
    e = doc["economy"]
    e["assets"] = sorted(draw(st.sets(st.sampled_from([a.value for a in Asset]))))
    e["livestock"]["cattle"] = draw(st.integers(0, 30))
    e["livestock"]["goat_sheep"] = draw(st.integers(0, 60))
    return HouseholdProfile.model_validate(doc)


@st.composite
def stored(draw, p: HouseholdProfile) -> tuple[StoredOutcome, Placement, Config]:
    """A stored state of `p`: classified with some placement and FKP decision, by these rules or older
    ones, its rank value the same as now or not, maybe with its decile moved since (a re-rank)."""
    fkp = draw(st.sampled_from([None, *WelfareGroup]))
    was = draw(st.sampled_from([CONFIG, other_rules(CONFIG, 3), other_rules(CONFIG, 6), reordered(CONFIG),
                                  other_member_rules(CONFIG)]))
    decile = draw(st.integers(1, 10))
    placement = Ranked(decile, "ranked: regency 6401 at 2026-11-01T00:00:00Z among 5 families", 7)
    c = was.classify(p, fkp, placement)
    value = c.rank_value if draw(st.booleans()) else c.rank_value * 1.01
    row_decile = c.decile if draw(st.integers(0, 3)) else draw(st.integers(1, 10))  # moved by a re-rank since
    same_model = draw(st.booleans())  # stored with the configured model and lines: its prediction is read
    doc = p.model_dump(mode="json")
    if same_model:  # and of the document only the members, as the store reads it then
        doc = {"members": doc["members"]}
    r = StoredOutcome(p.family_id, p.sls_id, doc, value, row_decile, c.decile_basis, 7,
                      int(c.welfare_group), [d.programme for d in c.decisions if d.eligible], c.eligibility,
                      c.member_eligibility, None if fkp is None else int(fkp), c.predicted if same_model else None)
    now = Ranked(row_decile, c.decile_basis, 7) if value == c.rank_value else CUTS
    return r, now, was


def test_features_of_a_document_are_the_profiles():
    for p in PROFILES:
        assert features_of(p.model_dump(mode="json")) == features(p), p.family_id


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_decides_what_the_per_family_classification_decides(data):
    p = data.draw(profiles())
    assert features_of(p.model_dump(mode="json")) == features(p)
    assert components_of(p.model_dump(mode="json")["members"]) == components(p)
    r, placement, _ = data.draw(stored(p))
    judge = ReplayJudge(CONFIG)
    fast = judge.judge(r, lambda sls: CUTS)
    fkp = None if r.fkp_group is None else WelfareGroup(r.fkp_group)
    c = CONFIG.classify(p, fkp, placement)  # what the per-family replay stores
    same = c.outcome() == (r.welfare_group, r.decile, r.eligibility, r.member_eligibility)
    if fast is None:
        assert not same, "an unchanged family was sent the per-family way"
        return
    assert same, "a changed family was called unchanged (it would not be published)"
    assert (fast.predicted, fast.rank_value, fast.decile, fast.decile_basis, fast.ranking_id, fast.eligible) == (
        c.predicted, c.rank_value, c.decile, c.decile_basis, placement.ranking_id,
        [d.programme for d in c.decisions if d.eligible])


def test_a_page_reads_every_stored_family_the_same_with_its_rules_version_alone_changed():
    """The bench's case: a rules file whose version alone differs; nothing changes, every family is restated."""
    judge = ReplayJudge(CONFIG)
    for p in PROFILES:
        c = CONFIG.classify(p, None, CUTS)
        for doc, predicted in ((p.model_dump(mode="json"), None),  # another model or lines: the whole document
                               ({"members": p.model_dump(mode="json")["members"]}, c.predicted)):  # the members
            r = StoredOutcome(p.family_id, p.sls_id, doc, c.rank_value, c.decile, c.decile_basis, CUTS.ranking_id,
                              int(c.welfare_group), [d.programme for d in c.decisions if d.eligible], c.eligibility,
                              c.member_eligibility, None, predicted)
            fast = judge.judge(r, lambda sls: pytest.fail("the rank value is unchanged: no new placement"))
            assert fast is not None and fast.predicted == c.predicted and fast.decile_basis == c.decile_basis
            assert fast.rank_value == c.rank_value and math.isfinite(fast.rank_value)
