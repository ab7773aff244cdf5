"""The dead-letter command's pure parts: masking (no personal data in `show`), the
filters of `list`/`redrive`, and the headers a re-driven record carries."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from regsosek import deadletters as dl
from regsosek.deadletters import CommandError, DeadLetter, Filters

NIK = "6472050580000123"
KK = "6472010001001123"
NAME = "Siti Rahmawati"
BIRTH = "1985-06-05"
ADDRESS = "Jl. Mulawarman No. 7"
SUBMISSION = "0b9c6f5e-2d1a-4c3e-9f10-6a7b8c9d0e1f"
SLS = "64720100010001"
FAMILY = f"{SLS}-0001-001"


def interview_body() -> bytes:
    return json.dumps({
        "submission_id": SUBMISSION,
        "version": 2,
        "officer_id": "OFC-7",
        "location": {"sls_id": SLS, "building_no": 1, "family_no": 1, "kk_number": KK, "address": ADDRESS},
        "members": [
            {"line_no": 1, "name": NAME, "nik": NIK, "sex": "female", "date_of_birth": BIRTH,
             "relationship": "head", "worked_last_week": True, "hours_worked": 40},
        ],
        "family_id": FAMILY,
        NIK: "a key that is personal data",
    }).encode()


def record(partition=0, offset=7, ts=datetime(2022, 10, 20, 2, 0, tzinfo=UTC), value=None, **headers: str):
    base = {"ce_id": "evt-1", "ce_type": "id.go.bps.regsosek.interview.submitted.v1", "ce_source": "/regsosek/intake",
            "ce_specversion": "1.0", "ce_subject": FAMILY, "dlq_reason": "handler failed: KeyError",
            "dlq_service": "verify", "dlq_topic": "p.interview-submitted", "dlq_partition": "1", "dlq_offset": "42"}
    base.update(headers)
    return DeadLetter(partition, offset, int(ts.timestamp() * 1000), SLS.encode(), value,
                      tuple((k, v.encode()) for k, v in base.items() if v is not None))


def test_masked_body_shows_no_personal_data():
    shown = json.dumps(dl.mask_body(interview_body()))
    for secret in (NIK, KK, NAME, BIRTH, ADDRESS, "Siti", "OFC-7", "female"):
        assert secret not in shown, secret
    masked = dl.mask_body(interview_body())
    member = masked["members"][0]
    assert member["nik"] == "<str len=16>" and member["name"] == f"<str len={len(NAME)}>"
    assert member["date_of_birth"] == "<str len=10>" and member["worked_last_week"] == "<bool>"
    assert masked["location"]["kk_number"] == "<str len=16>"
    # the safelisted ids and numbers stay readable
    assert masked["submission_id"] == SUBMISSION and masked["family_id"] == FAMILY and masked["version"] == 2
    assert masked["location"]["sls_id"] == SLS and member["line_no"] == 1


def test_safelisted_key_with_unexpected_value_is_masked():
    body = json.dumps({"family_id": NIK, "sls_id": NAME, "submission_id": KK, "version": "2", "status": "Budi Santoso",
                       "decision": ["x"]}).encode()
    masked = dl.mask_body(body)
    assert masked == {"family_id": "<str len=16>", "sls_id": f"<str len={len(NAME)}>", "submission_id": "<str len=16>",
                      "version": "<str len=1>", "status": "<str len=12>", "decision": ["<str len=1>"]}


def test_body_that_is_not_json_shows_only_its_size():
    assert dl.mask_body(b'{"nik": "' + NIK.encode()) == f"<not JSON: {9 + 16} bytes>"
    assert dl.mask_body(b"\xff" + NIK.encode()) == "<not JSON: 17 bytes>"
    assert dl.mask_body(None) is None


def test_headers_as_shown():
    assert dl.show_header("ce_subject", FAMILY.encode()) == FAMILY
    assert NIK not in dl.show_header("ce_subject", NIK.encode())
    assert dl.show_header("x-custom", NAME.encode()) == f"<masked: {len(NAME)} bytes>"
    assert dl.show_header("dlq_reason", f"no family with NIK {NIK}".encode()) == "no family with NIK <16 digits>"
    assert dl.show_header("ce_source", b"\xff\xfe") == "<2 bytes, not UTF-8>"
    shown = dl._shown(record(value=interview_body()))
    text = json.dumps(shown)
    assert shown["key"] == SLS
    assert all(s not in text for s in (NIK, KK, NAME, BIRTH, ADDRESS))


def test_summary_carries_address_origin_and_reason():
    s = record(partition=2, offset=9).summary()
    assert (s["address"], s["service"], s["topic"], s["topic_partition"], s["topic_offset"]) == \
        ("2:9", "verify", "p.interview-submitted", 1, 42)
    assert s["ce_id"] == "evt-1" and s["reason"] == "handler failed: KeyError" and s["redriven_from"] is None
    assert s["time"].startswith("2022-10-20T02:00:00")


@pytest.mark.parametrize(("filters", "expected"), [
    (Filters(), True),
    (Filters(service="verify"), True),
    (Filters(service="classify"), False),
    (Filters(topic="interview-submitted"), True),  # without the prefix
    (Filters(topic="p.interview-submitted"), True),  # or with it
    (Filters(topic="sls-roster"), False),
    (Filters(reason_contains="KEYERROR"), True),
    (Filters(reason_contains="timeout"), False),
    (Filters(since=datetime(2022, 10, 20, 2, 0, tzinfo=UTC)), True),  # at the time: included
    (Filters(since=datetime(2022, 10, 20, 2, 0, 1, tzinfo=UTC)), False),
    (Filters(service="verify", topic="interview-submitted", reason_contains="key"), True),
    (Filters(service="verify", topic="interview-submitted", reason_contains="nope"), False),
])
def test_filters(filters, expected):
    assert filters.matches(record(), "p.") is expected


def test_filter_on_missing_headers_does_not_match():
    bare = record(dlq_service=None, dlq_reason=None, dlq_topic=None)
    assert Filters().matches(bare, "p.")
    assert not Filters(service="verify").matches(bare, "p.")
    assert not Filters(reason_contains="x").matches(bare, "p.")
    assert not Filters(topic="interview-submitted").matches(bare, "p.")


def test_redrive_headers_drop_dead_letter_headers_and_say_where_from():
    original = [("ce_id", b"evt-1"), ("traceparent", b"00-abc-def-01"), ("dup", b"1"), ("dup", b"2"),
                ("dlq_redriven_from", b"0:3"), ("dlq_reason", b"boom"), ("dlq_topic", b"p.x"), ("null", None)]
    assert dl.redrive_headers(original, "1:99") == [
        ("ce_id", b"evt-1"), ("traceparent", b"00-abc-def-01"), ("dup", b"1"), ("dup", b"2"), ("null", None),
        ("dlq_redriven_from", b"1:99")]


def test_the_newest_header_wins_after_a_second_dead_letter():
    again = record()
    again = DeadLetter(again.partition, again.offset, again.timestamp_ms, again.key, again.value,
                       again.headers + (("dlq_reason", b"second time"),))
    assert again.summary()["reason"] == "second time"


def test_redrive_target_must_be_a_topic_of_this_environment():
    assert dl.redrive_target(record(), "p.") == "p.interview-submitted"
    for bad in ("q.interview-submitted", "p.dead-letter", "p.no-such-topic", "interview-submitted"):
        with pytest.raises(CommandError) as e:
            dl.redrive_target(record(dlq_topic=bad), "p.")
        assert e.value.code == dl.EXIT_REFUSED
    with pytest.raises(CommandError):
        dl.redrive_target(record(dlq_topic=None), "p.")


def test_addresses_and_times():
    assert dl.parse_address("3:1200") == (3, 1200)
    for bad in ("3", "a:1", "-1:2", "1:2:3", NIK):
        with pytest.raises(CommandError) as e:
            dl.parse_address(bad)
        assert e.value.code == dl.EXIT_USAGE and NIK not in str(e.value)
    assert dl.parse_since("2022-10-20T10:00:00+08:00") == datetime(2022, 10, 20, 2, 0, tzinfo=UTC)
    assert dl.parse_since("2022-10-20T02:00:00") == datetime(2022, 10, 20, 2, 0, tzinfo=UTC)
    with pytest.raises(CommandError):
        dl.parse_since("yesterday")


def test_redrive_needs_a_selection(capsys):
    assert dl.main(["redrive"]) == dl.EXIT_USAGE
    assert "nothing selected" in capsys.readouterr().err
    assert dl.main(["redrive", "0:1", "--service", "verify"]) == dl.EXIT_USAGE


async def test_fault_point_rejects_only_the_named_types(monkeypatch):
    from regsosek.messaging.faults import REJECT_EVENT_TYPES, reject_event_types

    async def ok(uow, msg):
        return "applied"

    handlers = {"a.v1": ok, "b.v1": ok}
    monkeypatch.delenv(REJECT_EVENT_TYPES, raising=False)
    assert reject_event_types(handlers, ValueError) is handlers
    monkeypatch.setenv(REJECT_EVENT_TYPES, " b.v1 ,c.v1")
    wrapped = reject_event_types(handlers, ValueError)
    assert wrapped["a.v1"] is ok and set(wrapped) == {"a.v1", "b.v1"}
    with pytest.raises(ValueError, match="fault injected"):
        await wrapped["b.v1"](None, None)
