"""Per-record parsing of the consumer (no broker, no database): whatever a record carries,
`parse_record` returns a problem naming what is wrong instead of raising, and never puts a
value in the reason; aiokafka's fetcher hands over records whose header keys are not UTF-8;
the outbox stores and the relay re-keys any header key losslessly."""

from __future__ import annotations

import struct

import pytest
from aiokafka import ConsumerRecord
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from regsosek.contracts import CONSUMABLE_EVENT_TYPES as EVENT_TYPES  # v1 (legacy) types
from regsosek.contracts import FamilyInterview, SlsRoster
from regsosek.envelope import encode, new_envelope
from regsosek.examples import family_interview
from regsosek.messaging.consumer import parse_record
from regsosek.messaging.outbox import ESCAPED_KEY_PREFIX, header_key_bytes, kafka_header_key

SLS = "64720100010001"
NIK = "6472015005800001"


def _good():
    data = FamilyInterview.model_validate(family_interview())
    env = new_envelope(data, source="/t", subject="f", trace={"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"})
    return env, encode(data), env.headers()


def _record(headers, *, key=SLS.encode(), value=None, offset=7) -> ConsumerRecord:
    _, body, _ = _good()
    return ConsumerRecord("t", 0, offset, 0, 0, key, body if value is None else value, None,
                          len(key or b""), 0, tuple(headers))


def _replace(headers, name, value):
    return [(k, value if k == name else v) for k, v in headers]


def parse(record, max_bytes=1024 * 1024):
    env, _, _ = _good()
    return parse_record(record, handled_types={env.type}, max_bytes=max_bytes, service="verify")


def test_a_good_record_parses_with_its_trace():
    env, _, headers = _good()
    p = parse(_record(headers))
    assert p.problem is None and p.envelope.id == env.id and p.data is not None
    from opentelemetry import trace
    assert format(trace.get_current_span(p.context).get_span_context().trace_id, "032x") == "a" * 32


def _hostile():
    _, _, h = _good()
    return {
        "null traceparent": (_record(_replace(h, "traceparent", None)), "header traceparent has a null value"),
        "null ce_id": (_record(_replace(h, "ce_id", None)), "header ce_id has a null value"),
        "non-UTF-8 header value": (_record(_replace(h, "ce_source", b"\xff\xfe")), "header ce_source is not UTF-8"),
        "NUL in header value": (_record(_replace(h, "ce_subject", b"a\x00b")), "header ce_subject contains NUL"),
        "non-UTF-8 header key": (_record(h + [("\udcff\udcfe", b"x")]), "a header key is not UTF-8"),
        "NUL in header key": (_record(h + [("x\x00y", b"x")]), "a header key is not UTF-8 text without NUL"),
        "missing ce_type": (_record([x for x in h if x[0] != "ce_type"]), "missing CloudEvents header(s): ce_type"),
        "repeated ce_id": (_record(h + [("ce_id", b"another")]), "header ce_id is repeated"),
        "null key": (_record(h, key=None), "record has no key"),
        "non-UTF-8 key": (_record(h, key=b"\xff"), "record key is not UTF-8"),
        "value not JSON": (_record(h, value=b"\x00\xffnot json"), "invalid body: value is not JSON"),
        "too large": (_record(h, value=b" " * 2000), "record too large"),
        "unknown ce_type": (_record(_replace(h, "ce_type", b"id.go.bps.regsosek.nothing.v9")),
                            "unknown event type 'id.go.bps.regsosek.nothing.v9'"),
        "known type without a handler": (
            _record(_replace(h, "ce_type", EVENT_TYPES[SlsRoster].encode())), "no handler for event type"),
        "headers not pairs": (_record([b"junk"]), "a header is not a (key, value) pair"),
        "header value not bytes": (_record(_replace(h, "ce_id", 12)), "header ce_id is not bytes"),
    }


@pytest.mark.parametrize("kind", list(_hostile()))
def test_hostile_record_becomes_a_problem(kind):
    record, expected = _hostile()[kind]
    p = parse(record, max_bytes=1500 if kind == "too large" else 1024 * 1024)
    assert p.envelope is None and p.problem is not None, kind
    assert expected in p.problem, p.problem


def test_reasons_never_show_a_value_that_could_be_an_identifier():
    _, _, h = _good()
    for name in ("ce_type", "ce_specversion"):
        p = parse(_record(_replace(h, name, f"x{NIK}".encode())))
        assert p.problem and NIK not in p.problem, p.problem
    body = family_interview()
    body["members"][0]["date_of_birth"] = NIK
    import orjson
    p = parse(_record(h, value=orjson.dumps(body)))
    assert p.problem.startswith("invalid body") and NIK not in p.problem


class _Failing:
    """A record whose reading itself fails with `error`."""

    topic, partition, offset, value, headers = "t", 0, 1, b"{}", ()

    def __init__(self, error: Exception) -> None:
        self.error = error

    @property
    def key(self):
        raise self.error


def test_an_unexpected_error_is_a_problem_too():
    p = parse(_Failing(RuntimeError(NIK)))
    assert p.problem == "unreadable record (RuntimeError)"


def test_a_transient_failure_is_not_turned_into_a_problem():
    with pytest.raises(ConnectionResetError):
        parse(_Failing(ConnectionResetError()))


def test_garbage_trace_headers_never_raise():
    from regsosek.telemetry import context_from_headers

    for headers in ([("traceparent", None)], [("traceparent", b"\xff\x00")], [(None, b"x")], [b"junk"], None,
                    [("tracestate", 5)], {"traceparent": None}):
        context_from_headers(headers)  # a new trace, no exception


def _batch_with_key(raw_key: bytes, compression: int = 0) -> bytes:
    """A record batch (offsets 0-2) whose record 1 has header key `raw_key`, which aiokafka's
    producer cannot write (it takes str keys and encodes them as UTF-8)."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=0, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    placeholder = "\x01" + "P" * (len(raw_key) - 2) + "\x02"
    b.append(0, timestamp=None, key=b"k0", value=b"v0", headers=[("ok", b"a")])
    b.append(1, timestamp=None, key=b"k1", value=b"v1", headers=[(placeholder, b"x"), ("n", None)])
    b.append(2, timestamp=None, key=b"k2", value=b"v2", headers=[("ok", b"c")])
    buf = bytearray(b.build())
    i = buf.find(placeholder.encode())
    buf[i:i + len(raw_key)] = raw_key
    struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
    return bytes(buf)


def test_fetcher_hands_over_a_record_whose_header_key_is_not_utf8():
    raw_key = b"\xff\xfe-key-\x00\x80"
    records = fetcher.MemoryRecords(_batch_with_key(raw_key) + _batch_with_key(raw_key))
    seen = []
    while records.has_next():
        batch = records.next_batch()
        assert batch.validate_crc()
        seen.extend(list(batch))
    assert [r.offset for r in seen] == [0, 1, 2, 0, 1, 2]
    (k, v), (n, nv) = seen[1].headers
    assert header_key_bytes(k) == raw_key and v == b"x" and (n, nv) == ("n", None)
    record = _record([(k, v)])
    assert parse(record).problem == "a header key is not UTF-8 text without NUL"


def test_outbox_key_rule_is_lossless():
    assert kafka_header_key(b"ce_id") == "ce_id"
    assert kafka_header_key(b"a\x00b") == "a\x00b"  # UTF-8 with NUL: a valid Kafka key, kept verbatim
    escaped = kafka_header_key(b"\xff\xfe")
    assert escaped == ESCAPED_KEY_PREFIX + "fffe"
    assert bytes.fromhex(escaped.removeprefix(ESCAPED_KEY_PREFIX)) == b"\xff\xfe"
    assert header_key_bytes("\udcff\udcfe") == b"\xff\xfe"
