"""Webhook HMAC signatures."""

from __future__ import annotations

import re

import pytest

from regsosek.signing import sign, verify

SECRET = "s3cret-for-tests"
BODY = b'{"family_id":"64720100010001-0001-001"}'
T = 1_666_000_000


def test_header_format():
    assert re.fullmatch(rf"t={T},v1=[0-9a-f]{{64}}", sign(SECRET, T, BODY))


def test_round_trip():
    assert verify(SECRET, sign(SECRET, T, BODY), BODY, now=T) is None


def test_deterministic_and_depends_on_every_input():
    h = sign(SECRET, T, BODY)
    assert sign(SECRET, T, BODY) == h
    assert sign(SECRET + "x", T, BODY) != h
    assert sign(SECRET, T + 1, BODY).split("v1=")[1] != h.split("v1=")[1]
    assert sign(SECRET, T, BODY + b" ") != h


@pytest.mark.parametrize("body", [BODY + b" ", b"", BODY.replace(b"0001", b"0002"), BODY[:-1]])
def test_tampered_body(body):
    assert verify(SECRET, sign(SECRET, T, BODY), body, now=T) == "signature mismatch"


def test_wrong_secret():
    assert verify("other", sign(SECRET, T, BODY), BODY, now=T) == "signature mismatch"


def test_tampered_timestamp_breaks_digest():
    digest = sign(SECRET, T, BODY).split("v1=")[1]
    assert verify(SECRET, f"t={T + 1},v1={digest}", BODY, now=T) == "signature mismatch"


@pytest.mark.parametrize(
    "now,tolerance,expected",
    [
        (T + 300, 300, None),
        (T - 300, 300, None),
        (T + 301, 300, "timestamp outside tolerance"),
        (T - 301, 300, "timestamp outside tolerance"),
        (T + 3600, 300, "timestamp outside tolerance"),
        (T + 3600, 7200, None),
    ],
)
def test_timestamp_tolerance(now, tolerance, expected):
    assert verify(SECRET, sign(SECRET, T, BODY), BODY, now=now, tolerance_s=tolerance) == expected


@pytest.mark.parametrize(
    "header",
    ["", "garbage", f"t={T}", "v1=abcdef", f"t=abc,v1={'0' * 64}", f"t=-5,v1={'0' * 64}", f"t={T},v1=", f"t=,v1={'0' * 64}"],
)
def test_malformed_header(header):
    assert verify(SECRET, header, BODY, now=T) == "malformed signature header"


def test_parts_in_any_order():
    t_part, v_part = sign(SECRET, T, BODY).split(",")
    assert verify(SECRET, f"{v_part},{t_part}", BODY, now=T) is None


@pytest.mark.parametrize("t", ["\u00b2", "1\u00b3", "\u2460"])
def test_non_ascii_digit_timestamp_is_malformed_not_a_crash(t):
    # str.isdigit() accepts superscripts and circled digits that int() cannot parse;
    # a receiver must get the documented reason, not a ValueError.
    assert verify(SECRET, f"t={t},v1={'0' * 64}", BODY, now=T) == "malformed signature header"


def test_hostile_headers_are_reasons_not_exceptions():
    from regsosek.signing import verify

    body = b"{}"
    assert verify("s" * 32, "t=1,v1=\u00e9\u00e9", body, now=1) == "malformed signature header"
    assert verify("s" * 32, "t=" + "9" * 5000 + ",v1=ab", body, now=1) == "malformed signature header"
