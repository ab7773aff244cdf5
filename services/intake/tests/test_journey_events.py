"""What intake reads of the downstream decisions (intake.journey_events): each view's fields are the
contract's (same type, constraints and default), each journey handler reads its view, and the
consumer decodes a record as the view: the fields left out are not read, those read are validated,
and a record that is not JSON or lacks a read field is refused with the reason (a dead letter)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

import orjson
import pytest
from aiokafka import ConsumerRecord
from pydantic import BaseModel

from intake import journey_events as seen
from intake.handlers import IntakeHandlers
from regsosek.contracts import (
    CONSUMABLE_EVENT_TYPES,
    EligibilityDecided,
    EligibilityDelivered,
    FamilyClassified,
    FamilyInterview,
    InterviewFlagged,
    InterviewVerified,
    InterviewVerifiedV1,
)
from regsosek.contracts.decisions import ProgrammeDecision
from regsosek.contracts.household import HouseholdProfile
from regsosek.envelope import encode, new_envelope
from regsosek.examples import family_interview
from regsosek.messaging.consumer import parse_record, views_of

VIEWS = {InterviewVerified: seen.Verified, InterviewVerifiedV1: seen.VerifiedV1, InterviewFlagged: seen.Flagged,
         FamilyClassified: seen.Classified, EligibilityDecided: seen.Eligibility, EligibilityDelivered: seen.Delivered}
NESTED = {(seen.Verified, "profile"): HouseholdProfile, (seen.VerifiedV1, "interview"): FamilyInterview,
          (seen.Eligibility, "decisions"): ProgrammeDecision}
IV = FamilyInterview.model_validate(family_interview())
AT = datetime(2022, 10, 21, 3, tzinfo=UTC)


def _same_fields(view: type[BaseModel], contract: type[BaseModel]) -> None:
    for name, f in view.model_fields.items():
        assert name in contract.model_fields, f"{view.__name__}.{name} is not in {contract.__name__}"
        c = contract.model_fields[name]
        assert f.is_required() == c.is_required() and f.default == c.default, f"{view.__name__}.{name}"
        if (view, name) in NESTED:
            inner = NESTED[view, name]
            if c.annotation is inner:
                assert isinstance(f.annotation, type)
                _same_fields(f.annotation, inner)
            else:  # a list of them
                assert get_args(c.annotation) == (inner,)
                (item,) = get_args(f.annotation)
                _same_fields(item, inner)
        else:
            assert (f.annotation, f.metadata) == (c.annotation, c.metadata), f"{view.__name__}.{name}"


@pytest.mark.parametrize(("contract", "view"), list(VIEWS.items()), ids=lambda v: v.__name__)
def test_every_field_a_view_reads_is_its_contracts(contract, view):
    _same_fields(view, contract)


def test_each_journey_handler_reads_its_view():
    handlers = object.__new__(IntakeHandlers).consumers()  # the handlers as the consumer gets them
    views = views_of({CONSUMABLE_EVENT_TYPES[m]: h for m, h in handlers.items()})
    assert views == {CONSUMABLE_EVENT_TYPES[m]: v for m, v in VIEWS.items()}


def _eligibility(**changes) -> dict:
    e = EligibilityDecided(
        family_id=IV.family_id, sls_id=IV.location.sls_id, submission_id=IV.submission_id, version=1,
        welfare_group=1, decile=2, model_version="m1", rule_version="r1", decided_at=AT, decision_seq=3,
        decisions=[ProgrammeDecision(programme="PKH", eligible=True, rule_version="r1", reasons=["a"]),
                   ProgrammeDecision(programme="BPNT", eligible=False, rule_version="r1", reasons=["b"])])
    return {**orjson.loads(encode(e)), **changes}


def _parse(body: dict | bytes, views=None):
    data = EligibilityDecided.model_validate(_eligibility())
    env = new_envelope(data, source="/regsosek/classify", subject=IV.family_id)
    value = body if isinstance(body, bytes) else orjson.dumps(body)
    record = ConsumerRecord("t", 0, 7, 0, 0, b"k", value, None, 1, len(value), tuple(env.headers()))
    return parse_record(record, handled_types={env.type}, max_bytes=1024 * 1024, service="intake",
                        views={env.type: seen.Eligibility} if views is None else views)


def test_a_record_is_decoded_as_the_view_its_handler_reads():
    p = _parse(_eligibility())
    assert p.problem is None and isinstance(p.data, seen.Eligibility)
    assert (p.data.submission_id, p.data.rule_version, p.data.decided_at, p.data.decision_seq) == (
        IV.submission_id, "r1", AT, 3)
    assert [(d.programme, d.eligible) for d in p.data.decisions] == [("PKH", True), ("BPNT", False)]


def test_what_the_view_leaves_out_is_not_read():
    """A part intake does not read (the per-member decisions) is not validated by intake; the whole
    contract, as every other consumer reads it, still refuses it."""
    broken = _eligibility(member_decisions="not a list", decile=99)
    assert _parse(broken).problem is None
    whole = _parse(broken, views={})
    assert whole.problem is not None and "/member_decisions" in whole.problem and "/decile" in whole.problem


@pytest.mark.parametrize(("body", "reason"), [
    (b"\x00\xffnot json", "invalid body: value is not JSON"),
    ({k: v for k, v in _eligibility().items() if k != "submission_id"}, "/submission_id: Field required"),
    (_eligibility(submission_id="not-a-uuid"), "/submission_id:"),
    (_eligibility(decided_at="yesterday"), "/decided_at:"),
    (_eligibility(decisions=[{"programme": "PKH"}]), "/decisions/0/eligible: Field required"),
    (_eligibility(decision_seq=-1), "/decision_seq:"),
], ids=["not JSON", "no submission id", "bad submission id", "bad time", "decision without outcome", "bad seq"])
def test_a_record_whose_read_fields_do_not_validate_is_refused_with_the_reason(body, reason):
    p = _parse(body)
    assert p.problem is not None and p.data is None
    assert reason in p.problem
    assert "not-a-uuid" not in p.problem and "yesterday" not in p.problem  # reasons name fields, not values
