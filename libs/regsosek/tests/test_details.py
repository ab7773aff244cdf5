"""The verification details' templates (regsosek.contracts.details): every sentence a template makes
reads back as that template with the same values (a detail nested in another reads as the outer
one: the first in the table); other text reads as nothing. The sentences themselves are pinned:
integrators read them, and classify's SQL and migrations match their prefixes."""

from __future__ import annotations

import re

import pytest

from regsosek.contracts import details as dt
from regsosek.contracts.details import CATALOGUE, NO_ROSTER, UPDATE_NOT_APPLIED, UPDATE_WAITED_IN_VAIN, read_detail

# values for each field: numbers, words, ids and texts, these holding the separators the templates use
VALUES = ["1", "12", "1, 2, 14", "0.0416667", "2.31481e-05", "death", "new_family", "SPV-7", "SPV 7 (relief)",
          "family lives in the next RT: asked twice; (sure)", "a (b), c", "x; not verified within 3 days",
          "2022-10-20T08:00:00Z", "pmt-illustrative-2022.1", "regency 6472"]


def sample(template, i: int) -> dict[str, str]:
    """Values the field's own pattern takes, a different one for each i."""
    out = {}
    for n, name in enumerate(template.fields):
        pattern = re.compile(template.kind(name).pattern)
        fits = [v for v in VALUES if pattern.fullmatch(v)]
        out[name] = fits[(i + n) % len(fits)]
    return out


@pytest.mark.parametrize("template", CATALOGUE, ids=lambda t: t.code)
@pytest.mark.parametrize("i", range(4))
def test_a_detail_reads_back_as_its_template_and_values(template, i):
    values = sample(template, i)
    found = read_detail(template(**values))
    assert found is not None
    assert (found[0].code, found[1]) == (template.code, values)


def test_codes_are_unique_and_texts_distinct():
    assert len({t.code for t in CATALOGUE}) == len(CATALOGUE)
    assert len({t.text for t in CATALOGUE}) == len(CATALOGUE)


def test_a_detail_inside_another_reads_back_level_by_level():
    inner = UPDATE_WAITED_IN_VAIN(why=NO_ROSTER(hours=48), days="0.5")
    template, values = read_detail(UPDATE_NOT_APPLIED(why=inner))
    assert (template, values) == (UPDATE_NOT_APPLIED, {"why": inner})
    template, values = read_detail(values["why"])
    assert (template.code, values["days"]) == ("update_waited_in_vain", "0.5")
    assert read_detail(values["why"]) == (NO_ROSTER, {"hours": "48"})


@pytest.mark.parametrize("text", [None, "", "building one family 1 and its KK are not on the SLS roster",
                                  "the RT head confirmed this family moved", "roster lists 3 members",
                                  "NIK of member line(s)  already belongs to another family"])
def test_other_text_reads_as_nothing(text):
    assert read_detail(text) is None


# Each template's sentence as verify and classify wrote it before the table existed (their f-strings,
# copied): integrators read these texts, so a change of wording is a change of the contract.
GOLDEN = [
    (dt.NOT_ON_ROSTER, {"building": 2, "family": 1}, "building 2 family 1 and its KK are not on the SLS roster"),
    (dt.ROSTER_SAYS_MOVED, {}, "the RT head confirmed this family moved out of the SLS"),
    (dt.ROSTER_SAYS_DISSOLVED, {}, "the RT head confirmed this family dissolved or its head died"),
    (dt.ROSTER_SAYS_UNKNOWN, {}, "the RT head does not know this family"),
    (dt.MEMBERS_DIFFER, {"roster": 4, "interview": 5}, "roster lists 4 members, interview has 5"),
    (dt.PRELISTED_DIFFER, {"roster": 4, "prelisted": 3, "residents": 2},
     "roster lists 4 members, interview lists 3 prelisted members (2 living with the family)"),
    (dt.DUPLICATE_NIK, {"lines": "1, 3"}, "NIK of member line(s) 1, 3 already belongs to another family"),
    (dt.DUPLICATE_INTERVIEW, {},
     "this family was already interviewed with the same version; submit a correction as a higher version"),
    (dt.NO_ROSTER, {"hours": "48"}, "no SLS roster arrived within 48 h of the interview"),
    (dt.NO_COMPETENT_RESPONDENT, {}, "no competent respondent until the end of the collection period"),
    (dt.REFUSED, {}, "the family refused the interview"),
    (dt.OFFICER_FOUND_MOVED, {}, "the officer found the family moved"),
    (dt.OFFICER_NOT_FOUND, {}, "the officer did not find the family"),
    (dt.VERIFIED_BY_SUPERVISOR, {"supervisor": "SPV-7"}, "verified by supervisor SPV-7"),
    (dt.REJECTED_BY_SUPERVISOR, {"supervisor": "SPV-7", "reason": "x"}, "rejected by supervisor SPV-7: x"),
    (dt.UPDATE_APPLIED, {"kind": "death", "basis": "field_check"}, "death applied (field_check)"),
    (dt.MISSED_FAMILY_CHECKED, {}, "a family missed by the census, field-checked"),
    (dt.UPDATE_FAMILY_MOVED, {}, "the family moved out of its SLS (update)"),
    (dt.UPDATE_NO_RESIDENT, {}, "no member lives with the family any more (update)"),
    (dt.UPDATE_NOT_APPLIED, {"why": "w"}, "update not applied: w"),
    (dt.UPDATE_WAITED_IN_VAIN, {"why": "w", "days": "30"}, "w; not verified within 30 days"),
    (dt.NO_RESIDENT_ON_LINE, {"line": 3}, "no member on line 3 lives with the family"),
    (dt.CHANGE_WITHOUT_FIELD, {"kind": "death", "field": "line_no"}, "a death change without line_no"),
    (dt.LINE_TAKEN, {"line": 3}, "line 3 is another member's row on the family's form"),
    (dt.LAST_VERSION, {}, "the family's form has reached its last version"),
    (dt.ALREADY_REGISTERED, {}, "a family with this id is registered already"),
    (dt.FORM_NOT_KEPT, {}, "the family's form is no longer kept"),
    (dt.FAMILY_IN_STATE, {"state": "flagged"}, "the family is flagged, not verified"),
    (dt.NEVER_REACHED_VERIFY, {}, "the family's interview never reached verify"),
    (dt.STILL_WAITS_FOR_ROSTER, {}, "the family's interview still waits for the SLS roster"),
    (dt.STILL_FLAGGED, {}, "the family is still flagged"),
    (dt.NOT_VERIFIED, {}, "the family is not verified"),
    (dt.FKP_FAMILY_MOVED, {}, "village consultation (FKP): the whole family moved away"),
    (dt.FKP_FAMILY_DIED, {}, "village consultation (FKP): the family head died and the family dissolved"),
    (dt.SCOPE_NATIONAL, {}, "national"),
    (dt.SCOPE_PROVINCE, {"code": "64"}, "province 64"),
    (dt.SCOPE_REGENCY, {"code": "6472"}, "regency 6472"),
    (dt.BASIS_RANKED, {"scope": "national", "at": "2022-11-01T08:30:00Z", "families": 12},
     "ranked: national at 2022-11-01T08:30:00Z among 12 families"),
    (dt.BASIS_RANKED_AREA, {"scope": "national", "at": "2022-11-01T08:30:00Z", "families": 12, "area": "6472"},
     "ranked: national at 2022-11-01T08:30:00Z among 12 families (area 6472 re-ranked after village consultation)"),
    (dt.BASIS_RANKING_CUTS, {"scope": "regency 6472", "at": "2022-11-01T08:30:00Z", "families": 12},
     "provisional: cut-points of the regency 6472 ranking at 2022-11-01T08:30:00Z among 12 families"),
    (dt.BASIS_REFERENCE, {"model": "pmt-illustrative-2022.1"}, "provisional: reference cut-points of pmt-illustrative-2022.1"),
    (dt.BASIS_WITHIN_FKP_GROUP, {"basis": "b", "group": 2},
     "b; ranked within welfare group 2 set by village consultation (FKP)"),
]


@pytest.mark.parametrize(("template", "values", "sentence"), GOLDEN, ids=[t.code for t, _, _ in GOLDEN])
def test_each_sentence_is_the_one_integrators_have_always_read(template, values, sentence):
    assert template(**values) == sentence


def test_every_template_has_its_pinned_sentence():
    assert [t.code for t, _, _ in GOLDEN] == [t.code for t in CATALOGUE]
