"""CloudEvents binary-mode envelope: headers, validation of headers, decoding of data."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
from pydantic import ValidationError

from regsosek.contracts import CONSUMABLE_EVENT_TYPES, EVENT_TYPES, MODELS_BY_TYPE, FamilyInterview, SlsRoster
from regsosek.envelope import (
    CONTENT_TYPE,
    SPEC_VERSION,
    Envelope,
    EnvelopeError,
    decode,
    encode,
    new_envelope,
    new_event_id,
    read_headers,
)
from regsosek.examples import family_interview

SLS = "64720100010001"


def roster_doc() -> dict:
    return {
        "submission_id": "0b5b7f4e-3c1a-4e0e-9a55-1b7e8e6c2f10",
        "sls_id": SLS,
        "officer_id": "OFC-1",
        "confirmed_by": "Pak RT",
        "confirmed_at": "2022-10-16T08:00:00+08:00",
        "families": [
            {"building_no": 1, "family_no": 1, "kk_number": "6472010101220001", "head_name": "Budi",
             "member_count": 3, "status": "present"},
        ],
    }


def interview_doc() -> dict:
    """The example family cut down to its head."""
    doc = family_interview()
    doc["members"] = doc["members"][:1]
    doc["economy"] = {"assets": ["motorbike"]}
    return doc


TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "vendor=1"}


def full_headers() -> list[tuple[str, bytes]]:
    return new_envelope(SlsRoster.model_validate(roster_doc()), source="intake", subject=SLS, trace=TRACE).headers()


@pytest.mark.parametrize(
    "model,doc",
    [(SlsRoster, roster_doc), (FamilyInterview, interview_doc)],
    ids=["roster", "interview"],
)
def test_headers_round_trip(model, doc):
    data = model.model_validate(doc())
    env = new_envelope(data, source="intake", subject=SLS, trace=TRACE)
    back = read_headers(env.headers())
    assert back == env
    assert back.type == CONSUMABLE_EVENT_TYPES[model]  # v1 shapes: written as an older producer did
    assert back.traceparent == TRACE["traceparent"]
    assert back.tracestate == TRACE["tracestate"]


def test_headers_carry_spec_version_and_content_type():
    h = dict(full_headers())
    assert h["ce_specversion"] == SPEC_VERSION.encode()
    assert h["content-type"] == CONTENT_TYPE.encode()
    assert h["ce_subject"] == SLS.encode()


def test_headers_omit_absent_trace_context():
    env = new_envelope(SlsRoster.model_validate(roster_doc()), source="intake", subject=SLS)
    names = [k for k, _ in env.headers()]
    assert "traceparent" not in names and "tracestate" not in names
    back = read_headers(env.headers())
    assert back.traceparent is None and back.tracestate is None


def test_new_envelope_uses_given_event_id_and_fresh_ids_otherwise():
    data = SlsRoster.model_validate(roster_doc())
    assert new_envelope(data, source="s", subject=SLS, event_id="fixed-id").id == "fixed-id"
    a = new_envelope(data, source="s", subject=SLS).id
    b = new_envelope(data, source="s", subject=SLS).id
    assert a != b
    uuid.UUID(a)  # a generated id is a UUID


def test_event_ids_are_version_7_and_grow_with_time():
    ids = [new_event_id() for _ in range(5_000)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # ordered as text, as the inbox index orders them
    data = SlsRoster.model_validate(roster_doc())
    assert new_envelope(data, source="s", subject=SLS).id > ids[-1]
    now_ms = time.time_ns() // 1_000_000
    assert abs(int(ids[-1].replace("-", "")[:12], 16) - now_ms) < 60_000  # its first 48 bits: the time in ms


def test_read_headers_accepts_str_values():
    env = read_headers([(k, v.decode()) for k, v in full_headers()])
    assert env.source == "intake"


@pytest.mark.parametrize("missing", ["ce_id", "ce_type", "ce_source", "ce_specversion"])
def test_missing_ce_header_is_an_envelope_error(missing):
    headers = [(k, v) for k, v in full_headers() if k != missing]
    with pytest.raises(EnvelopeError, match=missing):
        read_headers(headers)


@pytest.mark.parametrize("emptied", ["ce_id", "ce_type", "ce_source"])
def test_empty_ce_header_counts_as_missing(emptied):
    headers = [(k, b"" if k == emptied else v) for k, v in full_headers()]
    with pytest.raises(EnvelopeError, match=emptied):
        read_headers(headers)


@pytest.mark.parametrize("headers", [None, [], ()])
def test_no_headers_at_all(headers):
    with pytest.raises(EnvelopeError, match="missing CloudEvents"):
        read_headers(headers)


def test_unsupported_spec_version():
    headers = [(k, b"0.3" if k == "ce_specversion" else v) for k, v in full_headers()]
    with pytest.raises(EnvelopeError, match="specversion"):
        read_headers(headers)


def test_non_utf8_header():
    headers = [(k, b"\xff\xfe" if k == "ce_source" else v) for k, v in full_headers()]
    with pytest.raises(EnvelopeError, match="UTF-8"):
        read_headers(headers)


def test_optional_headers_default_when_absent():
    headers = [(k, v) for k, v in full_headers() if k in ("ce_id", "ce_type", "ce_source", "ce_specversion")]
    env = read_headers(headers)
    assert env.time == "" and env.subject == ""


def test_unknown_event_type():
    env = Envelope(id="1", type="id.go.bps.regsosek.nothing.v9", source="x", time="", subject="")
    with pytest.raises(EnvelopeError, match="unknown event type"):
        decode(env, b"{}")


def test_record_without_value():
    env = read_headers(full_headers())
    with pytest.raises(EnvelopeError, match="no value"):
        decode(env, None)


@pytest.mark.parametrize(
    "model,doc",
    [(SlsRoster, roster_doc), (FamilyInterview, interview_doc)],
    ids=["roster", "interview"],
)
def test_encode_decode_round_trip(model, doc):
    data = model.model_validate(doc())
    env = new_envelope(data, source="intake", subject=SLS)
    assert decode(read_headers(env.headers()), encode(data)) == data


def test_decode_ignores_unknown_fields_top_level_and_nested():
    data = FamilyInterview.model_validate(interview_doc())
    doc = json.loads(encode(data))
    doc["added_in_v1_1"] = "x"
    doc["housing"]["solar_panel"] = True
    doc["members"][0]["nickname"] = "B"
    env = new_envelope(data, source="intake", subject=SLS)
    assert decode(read_headers(env.headers()), json.dumps(doc).encode()) == data


@pytest.mark.parametrize("where", ["top", "housing", "member", "roster_family"])
def test_producer_side_validation_forbids_unknown_fields(where):
    if where == "roster_family":
        doc = roster_doc()
        doc["families"][0]["surprise"] = 1
        model = SlsRoster
    else:
        doc = interview_doc()
        target = {"top": doc, "housing": doc["housing"], "member": doc["members"][0]}[where]
        target["surprise"] = 1
        model = FamilyInterview
    with pytest.raises(ValidationError) as e:
        model.model_validate(doc)
    assert any(err["type"] == "extra_forbidden" for err in e.value.errors())


def test_decode_still_rejects_invalid_known_fields():
    data = SlsRoster.model_validate(roster_doc())
    doc = json.loads(encode(data))
    doc["sls_id"] = "123"
    env = new_envelope(data, source="intake", subject=SLS)
    with pytest.raises(ValidationError):
        decode(read_headers(env.headers()), json.dumps(doc).encode())


def test_event_types_are_unique_and_invertible():
    from regsosek.contracts import CONSUMABLE_EVENT_TYPES, LEGACY_EVENT_TYPES

    assert len(set(CONSUMABLE_EVENT_TYPES.values())) == len(CONSUMABLE_EVENT_TYPES)
    assert not set(LEGACY_EVENT_TYPES) & set(EVENT_TYPES)  # a legacy type is never produced
    for model, t in CONSUMABLE_EVENT_TYPES.items():
        assert MODELS_BY_TYPE[t] is model
        assert re.fullmatch(r"id\.go\.bps\.regsosek\.[a-z.]+\.v[1-9][0-9]*", t)


def test_interview_verified_is_v2_and_v1_stays_readable():
    """A breaking change of the payload is a new `.vN` type; the old one is consumed only."""
    from regsosek.contracts import InterviewVerified, InterviewVerifiedV1

    assert EVENT_TYPES[InterviewVerified] == "id.go.bps.regsosek.interview.verified.v2"
    assert InterviewVerifiedV1 not in EVENT_TYPES
    assert MODELS_BY_TYPE["id.go.bps.regsosek.interview.verified.v1"] is InterviewVerifiedV1
