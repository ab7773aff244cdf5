"""JSON log lines: a failure carries its type and stack (with chained causes), never its message."""

from __future__ import annotations

import logging
import sys

import orjson

from regsosek.telemetry import JsonFormatter

NIK = "6472015005800001"


def _lookup(nik: str) -> None:
    raise KeyError(f"no family for NIK {nik}")


def _store(nik: str) -> None:
    try:
        _lookup(nik)
    except KeyError as e:
        raise ValueError(f"could not store {nik}") from e


def _format_current(msg: str = "store failed") -> dict:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, msg, None, sys.exc_info())
    return orjson.loads(JsonFormatter("test").format(record))


def test_exception_logged_with_type_and_stack_but_not_its_message():
    try:
        _store(NIK)
    except ValueError:
        line = _format_current()
    text = orjson.dumps(line).decode()
    assert NIK not in text
    assert line["exc_type"] == "ValueError"
    assert any(f.endswith("in _store") and "test_log_format.py:" in f for f in line["exc_stack"])
    (cause,) = line["exc_causes"]
    assert cause["relation"] == "cause" and cause["exc_type"] == "KeyError"
    assert any(f.endswith("in _lookup") for f in cause["exc_stack"])


def test_implicit_context_is_followed_too():
    try:
        try:
            _lookup(NIK)
        except KeyError:
            raise RuntimeError(NIK)  # noqa: B904 - the implicit context is what is tested
    except RuntimeError:
        line = _format_current()
    assert NIK not in orjson.dumps(line).decode()
    assert line["exc_causes"][0]["relation"] == "context"


def test_no_exception_no_exception_fields():
    line = _format_current("plain")
    assert "exc_type" not in line and line["msg"] == "plain"
