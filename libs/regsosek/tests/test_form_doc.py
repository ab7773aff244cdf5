"""docs/FORM.md documents the form's code lists as the contracts have them: every code of the
diploma, industry and difficulty lists in its table, each difficulty domain with the age the
contract filters by, the earlier codes named as such, and the source note."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from regsosek.contracts.interview import (
    DIFFICULTY_MIN_AGE,
    EARLIER_CODES,
    DifficultyLevel,
    Diploma,
    Industry,
    current_codes,
)

FORM = (Path(__file__).resolve().parents[3] / "docs" / "FORM.md").read_text()


def table_codes(heading: str) -> list[str]:
    """The first column's codes of the first table under `heading`, in order."""
    section = FORM.split(heading, 1)[1]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \|", section.split("\n## ", 1)[0], flags=re.M)
    return rows


@pytest.mark.parametrize("heading,codes", [
    ("## Highest diploma held", current_codes(Diploma)),
    ("## Industry", current_codes(Industry)),
])
def test_each_list_is_documented_in_order(heading, codes):
    assert table_codes(heading) == [c.value for c in codes]


def test_the_difficulty_scale_and_domains_with_their_ages():
    section = FORM.split("## Functional difficulty", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^\| `([a-z_]+)` \| \d: ", section, flags=re.M) == [c.value for c in DifficultyLevel]
    ages = dict(re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| (\d+) \|$", section, flags=re.M))
    assert {k: int(v) for k, v in ages.items()} == DIFFICULTY_MIN_AGE


def test_industry_sections_match_the_contract():
    rows = re.findall(r"^\| `([a-z_]+)` \| ([A-U]) \|", FORM, flags=re.M)
    assert {code: section for code, section in rows} == {c.value: c.kbli_section for c in current_codes(Industry)}


def test_earlier_codes_and_the_source_note():
    for code in EARLIER_CODES:
        assert f"`{code.value}`" in FORM
    assert "Transcribed from the REGSOSEK22-K form; where the form could not be consulted, the choice" in FORM
