"""Identifiers accept ASCII digits 0-9 only.

`\\d` (Python `re` and pydantic-core's Rust regex alike) and `int()` accept every Unicode
decimal digit: a NIK in fullwidth digits used to pass validation, be stored as a string
different from its ASCII twin and so escape the nationwide duplicate-NIK check."""

from __future__ import annotations

import copy
import re
from typing import Annotated

import pytest
from pydantic import BaseModel, StringConstraints, TypeAdapter, ValidationError

from regsosek.contracts import FamilyInterview, SlsRoster
from regsosek.contracts.decisions import FamilyId, FkpAdjustment, VerificationResolved
from regsosek.contracts.identifiers import (
    AreaPrefix,
    AreaPrefixOrEmpty,
    KkNumber,
    Nik,
    SlsId,
    SubSls,
    is_ascii_digits,
    is_family_id,
)
from regsosek.examples import family_interview

ZERO = {"fullwidth": 0xFF10, "arabic_indic": 0x0660, "devanagari": 0x0966}


def other_digits(ascii_digits: str, script: str, *, only_first: bool = False) -> str:
    """The same digits in another script (all of them, or only the first)."""
    def conv(c: str) -> str:
        return chr(ZERO[script] + int(c)) if c.isascii() and c.isdigit() else c
    if only_first:
        return conv(ascii_digits[0]) + ascii_digits[1:]
    return "".join(conv(c) for c in ascii_digits)


SCRIPTS = list(ZERO)


def test_pydantic_core_regex_d_is_unicode_and_0_9_is_not():
    """Why the types below do not use \\d: this documents the engine's behaviour."""
    with_d = TypeAdapter(Annotated[str, StringConstraints(pattern=r"^\d{2}$")])
    with_range = TypeAdapter(Annotated[str, StringConstraints(pattern=r"^[0-9]{2}$")])
    for script in SCRIPTS:
        assert with_d.validate_python(other_digits("12", script))  # accepted: the bug
        with pytest.raises(ValidationError):
            with_range.validate_python(other_digits("12", script))


@pytest.mark.parametrize("tp,good,label", [
    (Nik, "6472014509800001", "NIK"),
    (KkNumber, "6472010101220001", "KK number"),
    (SlsId, "64720100010001", "SLS id"),
    (SubSls, "01", "sub-SLS"),
    (AreaPrefix, "6472", "area prefix"),
    (AreaPrefix, "64", "area prefix"),
    (AreaPrefix, "64720100010001", "area prefix"),
    (AreaPrefixOrEmpty, "6472", "area prefix"),
    (FamilyId, "64720100010001-0001-001", "family id"),
])
@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("only_first", [False, True])
def test_identifier_types_refuse_other_digit_forms(tp, good, label, script, only_first):
    ta = TypeAdapter(tp)
    assert ta.validate_python(good) == good
    bad = other_digits(good, script, only_first=only_first)
    assert bad != good and len(bad) == len(good)
    with pytest.raises(ValidationError) as e:
        ta.validate_python(bad)
    (err,) = e.value.errors()
    assert err["type"] == "ascii_digits"
    assert "ASCII digits" in err["msg"] and label in err["msg"]
    assert bad not in err["msg"] and good not in err["msg"]  # never the value


@pytest.mark.parametrize("tp,bad", [
    (Nik, "647201450980000"), (Nik, "64720145098000011"), (Nik, "6472014509800001\n"), (Nik, " 6472014509800001"),
    (Nik, "647201450980000a"), (Nik, "¹472014509800001"), (Nik, "①472014509800001"), (Nik, ""),
    (KkNumber, "6472-10101220001"), (SlsId, "6472010001000"), (SubSls, "1"), (AreaPrefix, "6"),
    (AreaPrefix, "647201000100011"), (AreaPrefixOrEmpty, "x"),
    (FamilyId, "64720100010001-0001-0001"), (FamilyId, "64720100010001_0001_001"), (FamilyId, "64720100010001-0001"),
    (FamilyId, "64720100010001-0001-001-"), (FamilyId, "64720100010001-0001-001\n"),
])
def test_identifier_types_refuse_wrong_shape(tp, bad):
    with pytest.raises(ValidationError) as e:
        TypeAdapter(tp).validate_python(bad)
    assert "ASCII digits" in e.value.errors()[0]["msg"]


@pytest.mark.parametrize("tp", [Nik, SlsId, FamilyId])
def test_non_strings_are_a_type_error_not_coerced(tp):
    with pytest.raises(ValidationError) as e:
        TypeAdapter(tp).validate_python(6472014509800001)
    assert e.value.errors()[0]["type"] == "string_type"


def test_empty_prefix_means_whole_country():
    assert TypeAdapter(AreaPrefixOrEmpty).validate_python("") == ""


def test_is_ascii_digits():
    assert is_ascii_digits("0123456789", 10)
    assert is_ascii_digits("64", 2, 14) and not is_ascii_digits("6", 2, 14)
    assert not is_ascii_digits("６４", 2, 14)
    assert not is_ascii_digits("²³", 2)  # str.isdigit() says True for these
    assert not is_ascii_digits("6٤", 2) and not is_ascii_digits("", 1) and is_ascii_digits("", 0, 14)
    assert not is_ascii_digits("6 4", 3) and not is_ascii_digits("-64", 3) and not is_ascii_digits("+6", 2)


_FAMILY_ID = re.compile(r"[0-9]{14}-[0-9]{4}-[0-9]{3}")


@pytest.mark.parametrize("value", [
    "64720100010001-0001-001", "64720100010001-0001-0001", "64720100010001_0001_001", "64720100010001-0001",
    "64720100010001-0001-001-", "64720100010001-0001-001\n", "6472010001000-10001-001", "64720100010001--001-001",
    "６4720100010001-0001-001", "64720100010001-0001-00²", "64720100010001-00٠1-001", "", "-".join(["1" * 14, "1" * 4, ""]),
])
def test_is_family_id_is_the_documented_pattern(value):
    """The string-method check says what the pattern in the JSON schema says, character for character."""
    assert is_family_id(value) == bool(_FAMILY_ID.fullmatch(value))


def test_json_schema_shows_ascii_ranges_not_backslash_d():
    schema = str(FamilyInterview.model_json_schema()) + str(SlsRoster.model_json_schema()) \
        + str(VerificationResolved.model_json_schema())
    assert "\\d" not in schema
    assert "^[0-9]{16}$" in schema and "^[0-9]{14}$" in schema and "^[0-9]{14}-[0-9]{4}-[0-9]{3}$" in schema


# ------------------------------------------------------------------ in the contracts, with their locations

ROSTER = {
    "submission_id": "0b5b7f4e-3c1a-4e0e-9a55-1b7e8e6c2f10", "sls_id": "64720100010001", "officer_id": "OFC-1",
    "confirmed_by": "Pak RT", "confirmed_at": "2022-10-16T08:00:00+08:00",
    "families": [{"building_no": 1, "family_no": 1, "kk_number": "6472010101220001", "head_name": "Budi",
                  "member_count": 3, "status": "present"}],
}
RESOLUTION = {
    "submission_id": "1b5b7f4e-3c1a-4e0e-9a55-1b7e8e6c2f10", "family_id": "64720100010001-0001-001",
    "sls_id": "64720100010001", "decision": "verify", "supervisor_id": "SPV-1", "reason": "seen",
    "decided_at": "2022-11-01T10:00:00+08:00",
}


def _set(doc: dict, path: tuple, value):
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value


def _get(doc: dict, path: tuple):
    for p in path:
        doc = doc[p]
    return doc


CASES = [
    (FamilyInterview, family_interview, ("members", 0, "nik")),
    (FamilyInterview, family_interview, ("location", "sls_id")),
    (FamilyInterview, family_interview, ("location", "kk_number")),
    (FamilyInterview, family_interview, ("location", "sub_sls")),
    (SlsRoster, lambda: copy.deepcopy(ROSTER), ("sls_id",)),
    (SlsRoster, lambda: copy.deepcopy(ROSTER), ("families", 0, "kk_number")),
    (VerificationResolved, lambda: copy.deepcopy(RESOLUTION), ("family_id",)),
    (VerificationResolved, lambda: copy.deepcopy(RESOLUTION), ("sls_id",)),
]


@pytest.mark.parametrize("model,base,path", CASES, ids=lambda x: x if isinstance(x, str) else None)
@pytest.mark.parametrize("script", SCRIPTS)
def test_contracts_refuse_other_digit_forms_at_the_field(model: type[BaseModel], base, path, script):
    doc = base()
    if path == ("location", "sub_sls"):
        doc["location"]["sub_sls"] = "01"
    model.model_validate(doc)  # the ASCII original is valid
    _set(doc, path, other_digits(_get(doc, path), script))
    with pytest.raises(ValidationError) as e:
        model.model_validate(doc)
    errs = e.value.errors(include_input=False)
    assert [tuple(x["loc"]) for x in errs] == [path]
    assert "ASCII digits" in errs[0]["msg"]


def test_fkp_adjustment_family_id_refuses_other_digit_forms():
    fields = FkpAdjustment.model_fields
    assert "family_id" in fields and "sls_id" in fields
    with pytest.raises(ValidationError) as e:
        FkpAdjustment.model_validate({"family_id": other_digits("64720100010001-0001-001", "fullwidth"),
                                      "sls_id": other_digits("64720100010001", "devanagari")})
    locs = {tuple(x["loc"]): x["msg"] for x in e.value.errors()}
    assert "ASCII digits" in locs[("family_id",)] and "ASCII digits" in locs[("sls_id",)]


def test_area_csv_ignores_rows_with_other_digit_forms(tmp_path):
    from regsosek.areas import from_csv

    csv = tmp_path / "v.csv"
    csv.write_text("6501010001,6501010,Desa A\n" + other_digits("6501010002", "fullwidth") + ",6501010,Desa B\n"
                   + "65010100" + other_digits("03", "arabic_indic") + ",6501010,Desa C\n")
    doc = from_csv(csv, "65", "Kalimantan Utara")
    assert doc["villages"] == {"6501010": "001"}
