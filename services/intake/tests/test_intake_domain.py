"""Intake's cross-field checks: each broken variant yields its error at the exact JSON pointer."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intake.domain import area_reference, check_interview, content_hash, known_sls_area, nik_problems
from regsosek import areas
from regsosek.contracts import FamilyInterview
from regsosek.examples import family_interview

COLLECTION = (date(2022, 10, 15), date(2022, 11, 20))
SLS = "64720100010001"
WIB8 = timezone(timedelta(hours=8))


def nik(area6: str, dob: date, female: bool, serial: int) -> str:
    day = dob.day + (40 if female else 0)
    return f"{area6}{day:02d}{dob.month:02d}{dob.year % 100:02d}{serial:04d}"


def member(line_no: int, name: str, sex: str, dob: str, relationship: str, *, with_nik: bool = True,
           marital: str | None = None, **extra) -> dict:
    d = date.fromisoformat(dob)
    m = {
        "line_no": line_no, "name": name, "sex": sex, "date_of_birth": dob, "relationship": relationship,
        "marital_status": marital or ("married" if relationship in ("head", "spouse") else "never_married"),
        "school": "not_anymore", "highest_diploma": "sd", "worked_last_week": False,
    }
    if with_nik:
        m["nik"] = nik("647201", d, sex == "female", line_no)
    m.update(extra)
    return m


def valid_family() -> dict:
    """The smoke-test family: head, pregnant spouse, young child without a NIK."""
    return family_interview()


def check(doc: dict):
    return check_interview(FamilyInterview.model_validate(doc), collection=COLLECTION)


def test_valid_family_has_no_problems():
    errors, warnings = check(valid_family())
    assert errors == []
    assert warnings == []


def test_nik_builder_matches_the_smoke_family():
    d = valid_family()
    assert nik("647201", date(1980, 5, 5), False, 1) == d["members"][0]["nik"]
    assert nik("647201", date(1985, 6, 5), True, 2) == d["members"][1]["nik"]


# ------------------------------------------------------------------ broken variants


def _nik_sex(d):  # male head whose NIK day has +40 (a woman's NIK)
    d["members"][0]["nik"] = "6472014505800001"


def _nik_sex_female(d):  # female spouse with a man's NIK day
    d["members"][1]["nik"] = "6472010506850002"


def _nik_birth_month(d):
    d["members"][0]["nik"] = "6472010506800001"


def _nik_birth_year(d):
    d["members"][1]["nik"] = "6472014506860002"


def _no_head(d):
    d["members"][0]["relationship"] = "other_relative"


def _two_heads(d):
    d["members"][1]["relationship"] = "head"


def _child_older_than_head(d):
    d["members"][2].update(date_of_birth="1979-01-01", school="not_anymore", highest_diploma="sd")


def _child_same_age_as_head(d):
    d["members"][2].update(date_of_birth="1980-05-05", school="not_anymore", highest_diploma="sd")


def _grandchild_older_than_head(d):
    d["members"][2].update(relationship="grandchild", date_of_birth="1970-01-01")


def _parent_younger_than_head(d):
    d["members"].append(member(4, "Tono", "male", "1990-01-01", "parent", marital="married"))


def _parent_same_age_as_head(d):
    d["members"].append(member(4, "Tono", "male", "1980-01-01", "parent", marital="married"))


def _born_after_interview(d):
    d["members"][2]["date_of_birth"] = "2022-12-01"


def _born_day_after_interview(d):
    d["members"][2]["date_of_birth"] = "2022-10-21"


def _interview_after_period(d):
    d["interviewed_at"] = "2022-11-21T09:00:00+08:00"


def _interview_before_period(d):
    d["interviewed_at"] = "2022-10-14T23:59:00+08:00"


def _regency_not_in_reference(d):
    d["location"]["sls_id"] = "64990100010001"


def _province_not_in_reference(d):
    d["location"]["sls_id"] = "11710100010001"


def _duplicate_line_no(d):
    d["members"][2]["line_no"] = 1


def _duplicate_nik(d):  # twins given the same NIK: digits agree with both, but the NIK repeats
    twin = member(4, "Ana", "female", "2019-01-01", "child", school="never", highest_diploma="none")
    d["members"][2] = member(3, "Ani", "female", "2019-01-01", "child", school="never", highest_diploma="none")
    twin["nik"] = d["members"][2]["nik"]
    d["members"].append(twin)


def _head_younger_than_10(d):
    d["members"] = [member(1, "Kid", "male", "2014-01-01", "head", marital="never_married")]


def _spouse_younger_than_10(d):
    d["members"][1] = member(2, "Siti", "female", "2014-01-01", "spouse", marital="never_married")


def _married_child_under_10(d):
    d["members"][2]["marital_status"] = "married"


def _pregnant_over_55(d):
    d["members"].append(member(4, "Nenek", "female", "1950-01-01", "parent", marital="widowed", pregnant=True))


def _age_over_120(d):
    d["members"].append(member(4, "Buyut", "male", "1900-01-01", "parent", marital="widowed"))


CASES = [
    (_nik_sex, "/members/0/nik", "sex digits"),
    (_nik_sex_female, "/members/1/nik", "sex digits"),
    (_no_head, "/members", "found 0"),
    (_two_heads, "/members", "found 2"),
    (_child_older_than_head, "/members/2/date_of_birth", "child not younger than the head"),
    (_child_same_age_as_head, "/members/2/date_of_birth", "child not younger than the head"),
    (_grandchild_older_than_head, "/members/2/date_of_birth", "grandchild not younger than the head"),
    (_parent_younger_than_head, "/members/3/date_of_birth", "parent not older than the head"),
    (_parent_same_age_as_head, "/members/3/date_of_birth", "parent not older than the head"),
    (_born_after_interview, "/members/2/date_of_birth", "after the interview date"),
    (_born_day_after_interview, "/members/2/date_of_birth", "after the interview date"),
    (_interview_after_period, "/interviewed_at", "outside the collection period"),
    (_interview_before_period, "/interviewed_at", "outside the collection period"),
    (_regency_not_in_reference, "/location/sls_id", "not in the area reference"),
    (_province_not_in_reference, "/location/sls_id", "not in the area reference"),
    (_duplicate_line_no, "/members", "line_no"),
    (_duplicate_nik, "/members", "same NIK"),
    (_head_younger_than_10, "/members/0/date_of_birth", "head younger than 10"),
    (_spouse_younger_than_10, "/members/1/date_of_birth", "spouse younger than 10"),
    (_married_child_under_10, "/members/2/marital_status", "ever-married"),
    (_pregnant_over_55, "/members/3/pregnant", "pregnancy outside ages 10-55"),
    (_age_over_120, "/members/3/date_of_birth", "age over 120"),
]


@pytest.mark.parametrize("breaker,path,reason", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_broken_variant_yields_exactly_its_error(breaker, path, reason):
    d = valid_family()
    breaker(d)
    errors, _ = check(d)
    assert [(e.path, reason in e.reason) for e in errors] == [(path, True)], [e.as_dict() for e in errors]


def test_collection_period_bounds_are_inclusive_in_local_time():
    for ts in ("2022-10-15T00:01:00+08:00", "2022-11-20T23:59:00+08:00"):
        d = valid_family()
        d["interviewed_at"] = ts
        assert check(d)[0] == [], ts


def test_several_problems_are_all_reported():
    d = valid_family()
    _nik_sex(d)
    _duplicate_line_no(d)
    _interview_after_period(d)
    paths = sorted(e.path for e in check(d)[0])
    assert paths == ["/interviewed_at", "/members", "/members/0/nik"]


def test_nik_area_in_other_regency_is_a_warning_not_an_error():
    d = valid_family()
    d["members"][1]["nik"] = "6401014506850002"  # issued in Paser, lives in Samarinda
    errors, warnings = check(d)
    assert errors == []
    assert [w.path for w in warnings] == ["/members/1/nik"]
    assert "regency" in warnings[0].reason


@pytest.mark.parametrize("breaker,path", [(_nik_birth_month, "/members/0/nik"), (_nik_birth_year, "/members/1/nik")])
def test_nik_birth_date_digits_that_disagree_are_a_warning_not_an_error(breaker, path):
    d = valid_family()
    breaker(d)
    errors, warnings = check(d)
    assert errors == []
    assert [(w.path, "birth-date digits" in w.reason) for w in warnings] == [(path, True)]


def test_unknown_birth_date_with_an_age_is_accepted_and_checked_by_age():
    d = valid_family()
    del d["members"][2]["date_of_birth"]
    d["members"][2]["age"] = 3
    assert check(d) == ([], [])
    d["members"][2]["age"] = 50  # a child older than the head, by the age given
    assert [e.path for e in check(d)[0]] == ["/members/2/date_of_birth"]


def test_a_member_needs_a_birth_date_or_an_age():
    d = valid_family()
    del d["members"][2]["date_of_birth"]
    with pytest.raises(ValueError, match="date_of_birth or"):
        FamilyInterview.model_validate(d)


def test_an_age_beside_a_birth_date_must_agree_with_it():
    d = valid_family()
    d["members"][0]["age"] = 20
    assert [e.path for e in check(d)[0]] == ["/members/0/age"]


def test_a_head_who_died_is_replaced_by_a_head_living_with_the_family():
    d = valid_family()
    d["members"][0]["presence"] = "died"  # the prelisted head died; the widow heads the family now
    d["members"][1].update(relationship="head", marital_status="widowed", pregnant=False)
    assert check(d)[0] == []
    d["members"][1]["relationship"] = "spouse"  # nobody living with the family heads it
    assert [e.path for e in check(d)[0]] == ["/members"]


def test_a_refusal_carries_no_housing_or_members_and_needs_no_head():
    d = valid_family()
    d.update(result="refused", members=[])
    del d["housing"]
    assert check(d)[0] == []
    with pytest.raises(ValueError, match="housing is required"):
        FamilyInterview.model_validate({**d, "result": "complete"})
    with pytest.raises(ValueError, match="carries no housing"):
        FamilyInterview.model_validate({**valid_family(), "result": "refused"})


def test_a_split_off_family_may_name_its_parent_kk_and_no_other_family_may():
    d = valid_family()
    d["location"].update(kk_status="split_off", parent_kk_number="6472010101229999")
    assert check(d)[0] == []
    d["location"]["kk_status"] = "as_prelisted"
    with pytest.raises(ValueError, match="split-off"):
        FamilyInterview.model_validate(d)


def test_a_split_off_family_without_its_parent_kk_is_a_warning_and_its_own_kk_an_error():
    d = valid_family()
    d["location"]["kk_status"] = "split_off"
    errors, warnings = check(d)
    assert errors == [] and [w.path for w in warnings] == ["/location/parent_kk_number"]
    d["location"]["parent_kk_number"] = d["location"]["kk_number"]
    assert [e.path for e in check(d)[0]] == ["/location/parent_kk_number"]


def test_a_supervisor_check_before_the_interview_is_an_error():
    d = valid_family()
    d["supervisor_check"] = {"supervisor_id": "PML-01", "checked_on": "2022-10-01", "outcome": "approved"}
    assert [e.path for e in check(d)[0]] == ["/supervisor_check/checked_on"]
    d["supervisor_check"]["checked_on"] = d["interviewed_at"][:10]
    assert check(d)[0] == []


def test_relationship_code_7_is_a_domestic_worker():
    d = valid_family()
    d["members"].append(member(4, "Sopir", "male", "1990-01-01", "domestic_worker"))
    assert check(d)[0] == []


def test_member_without_nik_has_no_nik_problems():
    iv = FamilyInterview.model_validate(valid_family())
    assert nik_problems(iv.members[2], "/members/2") == ([], [])


def test_problem_as_dict():
    d = valid_family()
    _two_heads(d)
    assert check(d)[0][0].as_dict() == {"path": "/members", "reason": "exactly one family head required, found 2"}


@pytest.mark.parametrize("sls,known", [("64720100010001", True), ("64010100090001", True), ("64740300030001", True),
                                       ("64010100010001", False),  # Paser district 010 has no village 001
                                       ("64990100010001", False), ("65010100010001", False)])
def test_known_sls_area(sls, known):
    assert known_sls_area(sls) is known


def _reorder(obj):
    if isinstance(obj, dict):
        return {k: _reorder(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reorder(x) for x in obj]
    return obj


def test_content_hash_is_stable_under_key_order():
    d = valid_family()
    r = _reorder(d)
    assert list(r) != list(d)
    assert content_hash(r) == content_hash(d)
    assert len(content_hash(d)) == 32


def test_content_hash_changes_with_content():
    d = valid_family()
    e = copy.deepcopy(d)
    e["members"][0]["hours_worked"] = 41
    assert content_hash(d) != content_hash(e)
    # list order is content
    f = copy.deepcopy(d)
    f["economy"]["assets"].reverse()
    assert content_hash(d) != content_hash(f)


# ------------------------------------------------------------------ property: generated valid families

REGENCIES = sorted(area_reference()["regencies"])
VILLAGES = {r: areas.reference().villages_of(r) for r in REGENCIES}
BUILD_DAYS = 365 * 15 + 4  # at least 15 calendar years


@st.composite
def valid_families(draw, required: tuple[str, ...] = ()) -> dict:
    interview_day = draw(st.dates(COLLECTION[0], COLLECTION[1]))
    regency = draw(st.sampled_from(REGENCIES))
    sls = draw(st.sampled_from(VILLAGES[regency])) + draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    area6 = regency + draw(st.from_regex(r"[0-9]{2}", fullmatch=True))
    # head aged about 17..72 so parents (15..45 years older) stay under 120
    head_dob = draw(st.dates(date(1950, 1, 1), date(2005, 10, 1)))
    others = draw(st.lists(st.sampled_from(["spouse", "child", "grandchild", "parent", "other_relative", "other",
                                            "child_in_law"]), max_size=11 - len(required)))
    others = list(required) + others
    people = [("head", head_dob)]
    for rel in others:
        if rel in ("child", "grandchild"):
            lo = head_dob + timedelta(days=BUILD_DAYS)
            dob = draw(st.dates(lo, interview_day))
        elif rel == "parent":
            dob = head_dob - timedelta(days=BUILD_DAYS + draw(st.integers(0, 365 * 30)))
        elif rel == "spouse":
            dob = draw(st.dates(date(1940, 1, 1), date(2006, 1, 1)))
        else:
            dob = draw(st.dates(date(1930, 1, 1), interview_day))
        people.append((rel, dob))
    members = []
    for i, (rel, dob) in enumerate(people):
        female = draw(st.booleans())
        age = interview_day.year - dob.year - ((interview_day.month, interview_day.day) < (dob.month, dob.day))
        if age < 10:
            marital = "never_married"
        else:
            marital = draw(st.sampled_from(["never_married", "married", "divorced", "widowed"]))
        m = {
            "line_no": i + 1, "name": f"Member {i + 1}", "sex": "female" if female else "male",
            "date_of_birth": dob.isoformat(), "relationship": rel, "marital_status": marital,
            "school": "attending" if 6 <= age <= 21 else "not_anymore", "highest_diploma": "sd",
            "worked_last_week": False,
        }
        if female and 10 <= age <= 55 and draw(st.booleans()):
            m["pregnant"] = True
        if draw(st.integers(0, 4)) > 0:  # most members have a NIK
            m["nik"] = nik(area6, dob, female, i + 1)
        members.append(m)
    order = draw(st.permutations(range(len(members))))
    hour = draw(st.integers(0, 23))
    return {
        "submission_id": "7d1c9a56-63a4-4b51-8f5e-2f0c8f4c8b21",
        "officer_id": "OFC-9",
        "interviewed_at": datetime(interview_day.year, interview_day.month, interview_day.day, hour, 0,
                                   tzinfo=WIB8).isoformat(),
        "location": {"sls_id": sls, "building_no": draw(st.integers(1, 9999)), "family_no": draw(st.integers(1, 999))},
        "housing": valid_family()["housing"],
        "members": [members[j] for j in order],
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_families())
def test_generated_valid_families_pass(doc):
    errors, warnings = check(doc)
    assert errors == [], [e.as_dict() for e in errors]
    assert warnings == []


@settings(max_examples=60, deadline=None)
@given(valid_families(required=("spouse", "child", "grandchild", "parent")))
def test_generated_families_with_every_checked_relationship_pass(doc):
    """Forces the relationships the age-order rules look at, so the property is not vacuous."""
    relationships = {m["relationship"] for m in doc["members"]}
    assert {"head", "spouse", "child", "grandchild", "parent"} <= relationships
    assert check(doc) == ([], [])


# ------------------------------------------------------------------ property: generated broken families


def _nik_member(doc: dict) -> int | None:
    return next((i for i, m in enumerate(doc["members"]) if m.get("nik")), None)


def _break_nik_sex(doc: dict, i: int) -> str:
    nik_ = doc["members"][i]["nik"]
    dd = int(nik_[6:8])
    doc["members"][i]["nik"] = nik_[:6] + f"{(dd - 40) if dd > 40 else (dd + 40):02d}" + nik_[8:]
    return f"/members/{i}/nik"


def _break_nik_date(doc: dict, i: int) -> str:
    nik_ = doc["members"][i]["nik"]
    mm = int(nik_[8:10])
    doc["members"][i]["nik"] = nik_[:8] + f"{mm % 12 + 1:02d}" + nik_[10:]
    return f"/members/{i}/nik"


def _break_born_after_interview(doc: dict, i: int) -> str:
    doc["members"][i]["date_of_birth"] = "2023-01-01"
    doc["members"][i].pop("nik", None)
    return f"/members/{i}/date_of_birth"


def _break_interview_date(doc: dict, i: int) -> str:
    doc["interviewed_at"] = "2022-12-24T10:00:00+08:00"
    return "/interviewed_at"


def _break_sls(doc: dict, i: int) -> str:
    doc["location"]["sls_id"] = "6499" + doc["location"]["sls_id"][4:]
    return "/location/sls_id"


MUTATIONS = {"nik_sex": _break_nik_sex, "born_after_interview": _break_born_after_interview,
             "interview_date": _break_interview_date, "sls": _break_sls}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_families(), st.sampled_from(sorted(MUTATIONS)), st.data())
def test_generated_broken_families_are_rejected_at_the_broken_path(doc, mutation, data):
    """A valid generated family with one thing broken: rejected, and the problem is reported
    at the JSON pointer of what was broken."""
    if mutation.startswith("nik"):
        i = _nik_member(doc)
        if i is None:
            doc["members"][0]["nik"] = nik(doc["location"]["sls_id"][:6], date.fromisoformat(
                doc["members"][0]["date_of_birth"]), doc["members"][0]["sex"] == "female", 1)
            i = 0
    else:
        i = data.draw(st.integers(0, len(doc["members"]) - 1))
    path = MUTATIONS[mutation](doc, i)
    errors, _ = check(doc)
    assert errors, f"{mutation} was accepted"
    assert path in {e.path for e in errors}, (mutation, [e.as_dict() for e in errors])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_families())
def test_generated_families_with_nik_date_digits_off_are_accepted_with_a_warning(doc):
    i = _nik_member(doc)
    if i is None:
        doc["members"][0]["nik"] = nik(doc["location"]["sls_id"][:6], date.fromisoformat(
            doc["members"][0]["date_of_birth"]), doc["members"][0]["sex"] == "female", 1)
        i = 0
    path = _break_nik_date(doc, i)
    errors, warnings = check(doc)
    assert errors == []
    assert path in {w.path for w in warnings}


# ---------------------------------------------------------------- the status view's final state


def test_final_state_by_decision_sequence_not_arrival():
    from intake.domain import Step, final_state

    flag_first = [Step("flagged", 2), Step("verified", 1)]
    assert final_state("interview", flag_first) == "flagged"
    stale_flag = [Step("verified", 1), Step("classified", 1), Step("eligibility", 1), Step("verified", 3),
                  Step("classified", 2), Step("eligibility", 2), Step("flagged", 2)]
    assert final_state("interview", stale_flag) == "decided"
    withdrawn = [Step("verified", 1), Step("eligibility", 1), Step("flagged", 2), Step("eligibility", 2)]
    assert final_state("interview", withdrawn) == "flagged"
    assert final_state("interview", [Step("verified", 1)]) is None
    assert final_state("roster", []) == "accepted"


def test_final_state_without_sequences_follows_arrival():
    from intake.domain import Step, final_state

    assert final_state("interview", [Step("verified"), Step("eligibility"), Step("flagged")]) == "flagged"
    assert final_state("interview", [Step("flagged"), Step("verified"), Step("eligibility")]) == "decided"
    assert final_state("interview", [Step("flagged"), Step("verified", 1), Step("eligibility", 1)]) == "decided"


# ---- retention of what intake received (docs/RETENTION.md)

def test_body_expires_only_when_old_and_final():
    from datetime import datetime, timedelta

    from intake.domain import Step, body_expires

    cut = datetime(2024, 1, 1, tzinfo=UTC)
    old, new = cut - timedelta(seconds=1), cut + timedelta(days=1)
    decided = [Step("verified", 1), Step("classified", 1), Step("eligibility", 1)]
    assert body_expires("interview", decided, old, cut)
    assert not body_expires("interview", decided, new, cut)  # recent: kept
    assert not body_expires("interview", [Step("verified", 1)], old, cut)  # still on its way: kept
    assert body_expires("interview", [Step("flagged", 1)], old, cut)
    assert not body_expires("interview", [Step("flagged", 1), Step("verified", 2)], old, cut)  # re-verified, in progress
    assert body_expires("roster", [], old, cut) and not body_expires("roster", [], new, cut)
