"""Sealing at rest (regsosek.crypto) and the keyed pseudonyms intake publishes (regsosek.pseudonyms)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from regsosek.contracts import FamilyInterview, InterviewSubmitted, pseudonymise_interview
from regsosek.crypto import DEVELOPMENT_DATA_KEY, CannotOpen, DataKeyError, kid_of, load_keyring, parse_keys
from regsosek.examples import family_interview
from regsosek.pseudonyms import kk_hash, nik_hash

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()


def test_nik_hash_is_the_function_verify_stored_claims_with():
    # verify's former store.nik_hashes: hmac.new(key.encode(), nik.encode(), sha256).digest()
    assert nik_hash("k", "6472010505800001") == hmac.new(b"k", b"6472010505800001", hashlib.sha256).digest()
    assert kk_hash("k", "6472010505800001") != nik_hash("k", "6472010505800001")


def test_the_published_interview_has_no_identifier():
    iv = FamilyInterview.model_validate(family_interview())
    text = pseudonymise_interview(iv, "k").model_dump_json()
    for v in [iv.location.kk_number, *(m.nik for m in iv.members if m.nik), *(m.name for m in iv.members)]:
        assert v not in text
    assert not {"name", "nik", "kk_number", "address", "gps"} & set(str(InterviewSubmitted.model_json_schema()).split("'"))


def test_seal_open_rotate():
    old = parse_keys(f"a:{K1}")
    blob = old.seal(b"secret", aad=b"row1")
    assert kid_of(blob) == "a" and b"secret" not in blob
    both = parse_keys(f"b:{K2},a:{K1}")
    assert both.open(blob, aad=b"row1") == b"secret"
    new = both.reseal(blob, aad=b"row1")
    assert kid_of(new) == "b" and parse_keys(f"b:{K2}").open(new, aad=b"row1") == b"secret"
    with pytest.raises(CannotOpen):
        both.open(blob, aad=b"row2")  # moved to another row
    with pytest.raises(CannotOpen):
        parse_keys(f"b:{K2}").open(blob, aad=b"row1")  # its key is gone


@pytest.mark.parametrize("keys,needle", [
    ("a:" + base64.b64encode(b"short").decode(), "32 bytes"),
    ("nocolon", "kid:base64key"),
    (f"a:{K1},a:{K2}", "twice"),
    ("a:!!!", "not base64"),
])
def test_bad_key_sets_are_refused_without_showing_keys(keys, needle):
    with pytest.raises(DataKeyError) as e:
        parse_keys(keys)
    assert needle in str(e.value) and K1 not in str(e.value)


def test_production_refuses_missing_or_development_data_keys():
    with pytest.raises(DataKeyError, match="must be set in production"):
        load_keyring("", "", "production")
    with pytest.raises(DataKeyError, match="development key"):
        load_keyring(f"x:{DEVELOPMENT_DATA_KEY}", "", "production")
    assert load_keyring(f"x:{K1}", "", "production").current_kid == "x"
    assert load_keyring("", "", "local").current_kid == "dev1"
