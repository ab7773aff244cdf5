"""Privacy by design: a subscription is narrowed to its token's programmes and areas, gets only
its programmes' decisions (and reasons) and the fields they may receive, and a programme's number
of subscriptions is bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from notify.app import load_access
from notify.domain import (
    REQUIRED_FIELDS,
    Filters,
    Refusal,
    narrow,
    parse_access,
    payload_for,
    subscription_limit_problem,
)
from notify.settings import NotifySettings
from regsosek.programmes import PROGRAMME_CODES

ACCESS = load_access(NotifySettings().programme_access_file)


def decision() -> dict:
    """An eligibility decision (JSON form) of a family eligible for PKH and PBI-JKN."""
    return {
        "family_id": "64720100010001-0001-001", "sls_id": "64720100010001",
        "submission_id": "7b1c3c39-92c0-4a8b-a1a3-0d8e2b1f4a11", "version": 2, "welfare_group": 1, "decile": 1,
        "model_version": "pmt-2022.1", "rule_version": "rules-2022.1", "decided_at": "2022-11-01T00:00:00Z",
        "decision_seq": 7,
        "decisions": [
            {"programme": "pkh", "eligible": True, "rule_version": "rules-2022.1", "reasons": ["decile 1 <= 4", "child_under_6"]},
            {"programme": "pbi_jkn", "eligible": True, "rule_version": "rules-2022.1",
             "reasons": ["severe_disability", "chronic illness of a member"]},
            {"programme": "pip", "eligible": False, "rule_version": "rules-2022.1", "reasons": ["no school-age child"]},
        ],
    }


# ---------------------------------------------------------------- payload_for


def test_a_pkh_subscription_gets_no_pbi_jkn_decision_nor_its_reasons():
    p = payload_for(decision(), ("pkh",), ACCESS)
    assert [d["programme"] for d in p["decisions"]] == ["pkh"]
    text = repr(p)
    assert "pbi_jkn" not in text and "severe_disability" not in text and "chronic illness" not in text
    assert "pip" not in text and "no school-age child" not in text
    assert {k: p[k] for k in ("family_id", "sls_id", "welfare_group", "decile", "version", "decision_seq",
                              "decided_at", "model_version", "rule_version")} == {
        k: decision()[k] for k in ("family_id", "sls_id", "welfare_group", "decile", "version", "decision_seq",
                                   "decided_at", "model_version", "rule_version")}


def test_a_subscription_of_two_programmes_gets_both_in_the_events_order():
    p = payload_for(decision(), ("pip", "pkh"), ACCESS)
    assert [d["programme"] for d in p["decisions"]] == ["pkh", "pip"]


def test_fields_not_granted_never_get_in_and_unknown_fields_are_dropped():
    d = {**decision(), "members": [{"nik": "6472010101800001"}], "explanation": ["x"]}
    assert set(payload_for(d, ("pkh",), ACCESS)) == set(REQUIRED_FIELDS) | {
        "welfare_group", "decile", "model_version", "rule_version", "decisions"}
    doc = _doc()
    doc["programmes"]["pip"]["fields"] = list(REQUIRED_FIELDS)  # pip may not have group, decile, versions
    rules = parse_access(doc, PROGRAMME_CODES)
    assert set(payload_for(d, ("pip",), rules)) == set(REQUIRED_FIELDS) | {"decisions"}
    assert "decile" not in payload_for(d, ("pkh", "pip"), rules)  # the narrowest programme's fields
    assert "decile" in payload_for(d, ("pkh",), rules)


def with_members() -> dict:
    """decision() with member-level decisions: PBI-JKN for both members, PIP for neither."""
    members = [{"line_no": n, "programme": p, "eligible": p == "pbi_jkn", "rule_version": "rules-2022.2",
                "reasons": ["welfare group 1 <= 3", "every member of an eligible family"]}
               for p in ("pbi_jkn", "pip") for n in (1, 2)]
    return {**decision(), "member_decisions": members}


def test_a_by_name_programme_gets_its_own_member_decisions_only():
    p = payload_for(with_members(), ("pbi_jkn",), ACCESS)
    assert [(m["programme"], m["line_no"], m["eligible"]) for m in p["member_decisions"]] == [
        ("pbi_jkn", 1, True), ("pbi_jkn", 2, True)]


def test_a_programme_without_the_by_name_grant_gets_no_member_decisions():
    assert "member_decisions" not in payload_for(with_members(), ("pkh",), ACCESS)
    doc = _doc()
    doc["programmes"]["pbi_jkn"]["member_identifiers"] = False
    rules = parse_access(doc, PROGRAMME_CODES)
    p = payload_for(with_members(), ("pbi_jkn",), rules)
    assert "member_decisions" not in p and "line_no" not in repr(p)
    assert [d["programme"] for d in p["decisions"]] == ["pbi_jkn"]  # the family-level decision still comes
    both = payload_for(with_members(), ("pbi_jkn", "pip"), rules)  # pip keeps its grant, pbi_jkn has none
    assert {m["programme"] for m in both["member_decisions"]} == {"pip"}


def test_a_subscription_without_programmes_gets_no_decision():
    p = payload_for(decision(), (), ACCESS)
    assert p["decisions"] == [] and "decile" not in p and p["family_id"] == decision()["family_id"]


# ---------------------------------------------------------------- the access file


def _doc() -> dict:
    return yaml.safe_load(Path(NotifySettings().programme_access_file).read_text())


def test_shipped_access_file_grants_member_decisions_to_the_individual_programmes_only():
    assert set(ACCESS.programmes) == set(PROGRAMME_CODES)
    assert all(a.legal_basis for a in ACCESS.programmes.values())
    assert {p for p, a in ACCESS.programmes.items() if a.member_identifiers} == {"pbi_jkn", "pip"}


@pytest.mark.parametrize("change,needle", [
    (lambda d: d["programmes"]["pkh"].update(member_identifiers="yes"), "member_identifiers must be true or false"),
    (lambda d: d["programmes"]["pkh"].update(member_identifiers=1), "member_identifiers must be true or false"),
    (lambda d: d["programmes"].pop("pip"), "missing ['pip']"),
    (lambda d: d["programmes"].update(kur={**d["programmes"]["pkh"]}), "unknown ['kur']"),
    (lambda d: d["programmes"]["pkh"]["fields"].append("members"), "unknown fields"),
    (lambda d: d["programmes"]["pkh"]["fields"].remove("decision_seq"), "required fields missing"),
    (lambda d: d["programmes"]["pkh"].update(legal_basis=" "), "legal_basis"),
    (lambda d: d.pop("version"), "version"),
])
def test_a_bad_access_file_is_refused(change, needle):
    doc = _doc()
    change(doc)
    with pytest.raises(ValueError) as e:
        parse_access(doc, PROGRAMME_CODES)
    assert needle in str(e.value)


# ---------------------------------------------------------------- narrowing


def test_no_filters_means_the_tokens_programmes_and_areas():
    n = narrow(Filters(), token_programmes=("pkh", "pip"), token_areas=("6472", "6471"))
    assert n.programmes == ("pkh", "pip")
    assert n.filters.area_prefixes == ("6472", "6471") and n.filters.programmes == ()


def test_filters_within_the_token_are_kept():
    n = narrow(Filters(programmes=("pip",), area_prefixes=("6472010",), welfare_groups=(1,)),
               token_programmes=("pkh", "pip"), token_areas=("6472",))
    assert n.programmes == ("pip",) and n.filters == Filters(("pip",), ("6472010",), (1,), ())


@pytest.mark.parametrize("filters,programmes,areas,path,needle", [
    (Filters(), (), ("64",), "/", "names no programmes"),
    (Filters(), ("pkh",), (), "/", "names no areas"),
    (Filters(programmes=("pkh", "pbi_jkn")), ("pkh",), ("64",), "/filters/programmes/1", "pbi_jkn is not among"),
    (Filters(area_prefixes=("6472", "65")), ("pkh",), ("64",), "/filters/area_prefixes/1", "the area is not within"),
    (Filters(area_prefixes=("64",)), ("pkh",), ("6472",), "/filters/area_prefixes/0", "the area is not within"),
])
def test_a_subscription_beyond_the_token_is_refused(filters, programmes, areas, path, needle):
    with pytest.raises(Refusal) as e:
        narrow(filters, token_programmes=programmes, token_areas=areas)
    assert e.value.status == 403 and e.value.path == path and needle in e.value.reason


def test_subscriptions_per_programme_are_bounded():
    assert subscription_limit_problem({"pkh": 9}, ("pkh",), 10) is None
    assert "pkh already has 10" in subscription_limit_problem({"pkh": 10, "pip": 1}, ("pip", "pkh"), 10)
    assert subscription_limit_problem({"pkh": 10}, ("pip",), 10) is None
