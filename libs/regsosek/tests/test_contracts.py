"""Field and cross-field rules of the event contracts."""

from __future__ import annotations

import copy

import pytest
from pydantic import TypeAdapter, ValidationError

from regsosek.contracts import FamilyInterview, InterviewFlagged, SlsRoster, family_id
from regsosek.contracts.decisions import FamilyId
from regsosek.examples import family_interview

SLS = "64720100010001"

BASE_INTERVIEW = family_interview()

BASE_ROSTER = {
    "submission_id": "0b5b7f4e-3c1a-4e0e-9a55-1b7e8e6c2f10",
    "sls_id": SLS,
    "officer_id": "OFC-1",
    "confirmed_by": "Pak RT",
    "confirmed_at": "2022-10-16T08:00:00+08:00",
    "families": [
        {"building_no": 1, "family_no": 1, "kk_number": "6472010101220001", "head_name": "Budi",
         "member_count": 3, "status": "present"},
        {"building_no": 1, "family_no": 2, "head_name": "Joko", "member_count": 2, "status": "moved"},
    ],
}


def interview(**patch) -> dict:
    d = copy.deepcopy(BASE_INTERVIEW)
    for path, value in patch.items():
        *parents, leaf = path.split("__")
        target = d
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[int(leaf) if leaf.isdigit() else leaf] = value
    return d


def error_locs(exc: ValidationError) -> list[tuple]:
    return [tuple(e["loc"]) for e in exc.errors()]


def test_base_interview_is_valid():
    iv = FamilyInterview.model_validate(BASE_INTERVIEW)
    assert iv.head is not None and iv.head.name == "Budi"
    assert iv.family_id == f"{SLS}-0001-001"


@pytest.mark.parametrize("nik", ["647201050580000", "64720105058000011", "647201050580000A", "", "6472 10505800001"])
def test_bad_nik_rejected(nik):
    with pytest.raises(ValidationError) as e:
        FamilyInterview.model_validate(interview(members__0__nik=nik))
    assert ("members", 0, "nik") in error_locs(e.value)


def test_nik_may_be_absent():
    iv = FamilyInterview.model_validate(interview(members__0__nik=None))
    assert iv.members[0].nik is None


@pytest.mark.parametrize("kk", ["123", "64720101012200011", "abcdefghijklmnop"])
def test_bad_kk_rejected(kk):
    with pytest.raises(ValidationError) as e:
        FamilyInterview.model_validate(interview(location__kk_number=kk))
    assert ("location", "kk_number") in error_locs(e.value)


def test_pregnancy_only_for_female():
    with pytest.raises(ValidationError, match="only a female member can be pregnant"):
        FamilyInterview.model_validate(interview(members__0__pregnant=True))
    assert FamilyInterview.model_validate(interview(members__1__pregnant=True)).members[1].pregnant


@pytest.mark.parametrize(
    "lighting,power,ok",
    [
        ("pln_metered", "450", True),
        ("pln_unmetered", "900", True),
        ("pln_metered", None, False),
        ("pln_unmetered", None, False),
        ("non_pln", None, True),
        ("none", None, True),
        ("non_pln", "450", False),
        ("none", "1300", False),
    ],
)
def test_installed_power_only_with_pln(lighting, power, ok):
    doc = interview(housing__lighting=lighting, housing__installed_power=power)
    if ok:
        assert FamilyInterview.model_validate(doc).housing.lighting.value == lighting
    else:
        with pytest.raises(ValidationError, match="installed_power") as e:
            FamilyInterview.model_validate(doc)
        assert all(loc[0] == "housing" for loc in error_locs(e.value))


@pytest.mark.parametrize(
    "field,values",
    [("assets", ["motorbike", "car", "motorbike"]), ("programmes_received", ["pkh", "pkh"])],
)
def test_duplicate_codes_rejected(field, values):
    with pytest.raises(ValidationError, match="each code may appear once") as e:
        FamilyInterview.model_validate(interview(**{f"economy__{field}": values}))
    assert ("economy", field) in error_locs(e.value)


def test_distinct_codes_accepted():
    iv = FamilyInterview.model_validate(interview(economy__assets=["car", "motorbike"],
                                                  economy__programmes_received=["pkh", "sembako"]))
    assert len(iv.economy.assets) == 2


def test_work_fields_only_for_members_who_worked():
    with pytest.raises(ValidationError, match="apply only to members who worked"):
        FamilyInterview.model_validate(interview(members__1__hours_worked=10))


@pytest.mark.parametrize("sls", ["6472010001000", "647201000100011", "64720100010A01"])
def test_sls_id_format(sls):
    with pytest.raises(ValidationError):
        FamilyInterview.model_validate(interview(location__sls_id=sls))


def test_interview_needs_a_member():
    with pytest.raises(ValidationError):
        FamilyInterview.model_validate(interview(members=[]))


def test_unknown_field_forbidden_and_models_frozen():
    with pytest.raises(ValidationError):
        FamilyInterview.model_validate(interview(surprise=1))
    iv = FamilyInterview.model_validate(BASE_INTERVIEW)
    with pytest.raises(ValidationError):
        iv.officer_id = "OTHER"


def test_roster_valid():
    r = SlsRoster.model_validate(BASE_ROSTER)
    assert len(r.families) == 2


def test_roster_duplicate_serials_rejected():
    doc = copy.deepcopy(BASE_ROSTER)
    doc["families"][1]["family_no"] = 1
    with pytest.raises(ValidationError, match="building 1 family 1 listed twice"):
        SlsRoster.model_validate(doc)


def test_roster_same_family_no_in_other_building_is_fine():
    doc = copy.deepcopy(BASE_ROSTER)
    doc["families"][1].update(building_no=2, family_no=1)
    assert SlsRoster.model_validate(doc).families[1].building_no == 2


@pytest.mark.parametrize(
    "sls,building,family,expected",
    [
        (SLS, 1, 1, "64720100010001-0001-001"),
        (SLS, 42, 7, "64720100010001-0042-007"),
        ("64010200030004", 9999, 999, "64010200030004-9999-999"),
    ],
)
def test_family_id_format(sls, building, family, expected):
    fid = family_id(sls, building, family)
    assert fid == expected
    assert TypeAdapter(FamilyId).validate_python(fid) == fid


@pytest.mark.parametrize("bad", ["64720100010001-1-1", "6472010001000-0001-001", "64720100010001_0001_001"])
def test_family_id_pattern_rejects_malformed(bad):
    with pytest.raises(ValidationError):
        TypeAdapter(FamilyId).validate_python(bad)


def test_flagged_event_rejects_malformed_family_id():
    doc = {"family_id": "bad", "sls_id": SLS, "submission_id": BASE_INTERVIEW["submission_id"], "version": 1,
           "reason": "not_on_roster", "detail": "x", "flagged_at": "2022-10-20T10:00:00+08:00"}
    with pytest.raises(ValidationError) as e:
        InterviewFlagged.model_validate(doc)
    assert ("family_id",) in error_locs(e.value)
    doc["family_id"] = family_id(SLS, 1, 1)
    assert InterviewFlagged.model_validate(doc).family_id == f"{SLS}-0001-001"
