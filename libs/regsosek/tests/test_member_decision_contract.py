"""eligibility-decided's member-level decisions are additive and optional: an event from before them
reads with none, and a reader that does not know the field (consumers ignore unknown fields) reads an
event that has them."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from regsosek.contracts import EligibilityDecided, MemberDecision

BEFORE = {
    "family_id": "64720100010001-0001-001", "sls_id": "64720100010001",
    "submission_id": "7b1c3c39-92c0-4a8b-a1a3-0d8e2b1f4a11", "version": 1, "welfare_group": 2, "decile": 2,
    "model_version": "pmt-it", "rule_version": "rules-it", "decided_at": "2022-11-01T00:00:00Z", "decision_seq": 3,
    "decisions": [{"programme": "pbi_jkn", "eligible": True, "rule_version": "rules-it", "reasons": ["group 2 <= 3"]}],
}
MEMBER = {"line_no": 2, "programme": "pbi_jkn", "eligible": True, "rule_version": "rules-it",
          "reasons": ["welfare group 2 <= 3", "every member of an eligible family"]}


def test_an_event_from_before_member_decisions_reads_with_none():
    assert EligibilityDecided.model_validate(BEFORE).member_decisions == []


def test_an_old_reader_reads_an_event_with_member_decisions():
    class OldEligibilityDecided(BaseModel):  # the shape before the field, as a tolerant consumer reads it
        model_config = ConfigDict(extra="ignore")
        family_id: str
        decile: int

    new = EligibilityDecided.model_validate({**BEFORE, "member_decisions": [MEMBER]})
    old = OldEligibilityDecided.model_validate_json(new.model_dump_json())
    assert (old.family_id, old.decile) == (BEFORE["family_id"], 2)
    assert json.loads(new.model_dump_json())["member_decisions"][0]["line_no"] == 2


@pytest.mark.parametrize("change", [{"line_no": 0}, {"line_no": 41}, {"programme": ""}, {"nik": "6472010101800001"}])
def test_a_member_decision_names_a_member_by_line_number_only(change):
    with pytest.raises(ValidationError):
        MemberDecision.model_validate({**MEMBER, **change})


def test_profile_members_keep_their_form_row_when_an_earlier_member_has_left() -> None:
    """A member-level decision names the member by the form's row: a member who died before them does
    not shift it (the profile holds only the members living with the family)."""
    from regsosek.contracts import FamilyInterview, household_profile
    from regsosek.examples import family_interview

    doc = family_interview()
    assert len(doc["members"]) >= 3
    doc["members"][1]["presence"] = "died"
    p = household_profile(FamilyInterview.model_validate(doc))
    assert [m.line_no for m in p.members] == [1] + list(range(3, len(doc["members"]) + 1))
