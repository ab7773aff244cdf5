"""The verification details' templates (regsosek.contracts.details): every sentence a template makes
reads back as that template with the same values, and as no other; other text reads as nothing."""

from __future__ import annotations

import re

import pytest

from regsosek.contracts.details import CATALOGUE, NO_ROSTER, NUMBERS, UPDATE_NOT_APPLIED, UPDATE_WAITED_IN_VAIN, read_detail

# values for each field: numbers, words, ids and texts, these holding the separators the templates use
VALUES = ["1", "12", "1, 2, 14", "0.0416667", "2.31481e-05", "death", "new_family", "SPV-7", "SPV 7 (relief)",
          "family lives in the next RT: asked twice; (sure)", "a (b), c", "x; not verified within 3 days",
          "2022-10-20T08:00:00Z", "pmt-illustrative-2022.1", "regency 6472"]


def sample(template, i: int) -> dict[str, str]:
    """Values the field's own pattern takes, a different one for each i."""
    out = {}
    for n, name in enumerate(template.fields):
        pattern = re.compile(template.patterns.get(name, NUMBERS))
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
