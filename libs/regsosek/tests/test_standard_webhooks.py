"""Standard Webhooks signatures: known answers (the reference implementation's vector, RFC 8037's
key and thumbprint), every changed byte refused, timestamp tolerance, the multi-signature header,
and interoperability: the off-the-shelf `standardwebhooks` package verifies our v1 (HMAC) form, and
the v1a (Ed25519) form verifies with `cryptography` following the spec by hand."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

from regsosek.keys import DEVELOPMENT_KEYS
from regsosek.standard_webhooks import (
    LOCAL_DEVELOPMENT_SIGNING_KEY,
    MalformedKey,
    generate_signing_key,
    jwk,
    load_public_key,
    load_signing_key,
    parse_signatures,
    public_key_from_jwk,
    public_key_text,
    sign_ed25519,
    sign_hmac,
    signed_content,
    thumbprint,
    verify,
    webhook_headers,
    whsec_form,
)

KEY = "whsk_" + base64.b64encode(bytes(range(32))).decode()
PUBLIC = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
MSG_ID = "5f0c5d59-1c52-4d1e-9a52-c1a8b2f3e4d5"
T = 1_700_000_000
BODY = b'{"header":{"action":"notify"}}'
SECRET = "a-subscription-secret-of-32-chars-or-more"


def headers_for(signatures: list[str], msg_id: str = MSG_ID, t: int = T) -> dict[str, str]:
    return webhook_headers(msg_id, t, signatures)


def signing_key():
    return load_signing_key(KEY)


# ---------------------------------------------------------------- known answers


def test_reference_implementation_vector():
    # The Standard Webhooks reference library's own asymmetric signing test (libraries/go):
    # key, message id, timestamp, payload and the expected v1a signature.
    key = load_signing_key("VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=")
    assert sign_ed25519(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == (
        "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag==")


def test_known_answer_for_our_id_and_body():
    assert public_key_text(signing_key().public_key()) == PUBLIC
    assert sign_ed25519(signing_key(), MSG_ID, T, BODY) == (
        "v1a,IXszo3LfvCs8Y6hoFoUlssNOK18cE5hiiFcE9TLFLL0pvZBppA4zN+VeL7buaKslareGGsoRXyFPIuI9R3IaDw==")
    assert sign_hmac(SECRET, MSG_ID, T, BODY) == "v1,eHkRBraBBS74wbFg5TvZ7tu9jvUJrquOLKSUd0GyKzc="


def test_rfc8037_key_jwk_and_thumbprint():
    # RFC 8037 appendix A.1-A.3: the Ed25519 example key, its public x and its JWK thumbprint.
    d = base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    public = load_signing_key(base64.b64encode(d).decode()).public_key()
    j = jwk(public, "k1")
    assert (j["kty"], j["crv"], j["x"], j["kid"]) == ("OKP", "Ed25519", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "k1")
    assert thumbprint(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert public_key_text(public_key_from_jwk(j)) == public_key_text(public) == j["whpk"]


def test_signed_content_is_id_dot_timestamp_dot_body():
    assert signed_content(MSG_ID, T, BODY) == f"{MSG_ID}.{T}.".encode() + BODY
    with pytest.raises(ValueError):
        signed_content("a.b", T, BODY)  # the spec: ids must not contain a full stop
    with pytest.raises(ValueError):
        signed_content("", T, BODY)


# ---------------------------------------------------------------- verification


def test_round_trip_with_the_public_key_only():
    h = headers_for([sign_ed25519(signing_key(), MSG_ID, T, BODY)])
    assert verify(BODY, h, now=T, public_keys=[load_public_key(PUBLIC)]) is None
    assert verify(BODY, {k.upper(): v for k, v in h.items()}, now=T, public_keys=[load_public_key(PUBLIC)]) is None


def test_every_changed_byte_of_the_body_is_refused():
    h = headers_for([sign_ed25519(signing_key(), MSG_ID, T, BODY)])
    public = [load_public_key(PUBLIC)]
    for i in range(len(BODY)):
        for flip in (0x01, 0x80):
            changed = BODY[:i] + bytes([BODY[i] ^ flip]) + BODY[i + 1:]
            assert verify(changed, h, now=T, public_keys=public) == "signature mismatch", (i, flip)
    for changed in (BODY + b" ", BODY[:-1], b"", b" " + BODY):
        assert verify(changed, h, now=T, public_keys=public) == "signature mismatch"


def test_every_changed_byte_of_the_signature_id_or_timestamp_is_refused():
    sig = sign_ed25519(signing_key(), MSG_ID, T, BODY)
    raw = base64.b64decode(sig.split(",", 1)[1])
    public = [load_public_key(PUBLIC)]
    for i in range(len(raw)):
        bad = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]
        assert verify(BODY, headers_for(["v1a," + base64.b64encode(bad).decode()]), now=T, public_keys=public) \
            == "signature mismatch", i
    assert verify(BODY, headers_for([sig], msg_id=MSG_ID.replace("5", "6", 1)), now=T, public_keys=public) \
        == "signature mismatch"
    assert verify(BODY, headers_for([sig], t=T + 1), now=T, public_keys=public) == "signature mismatch"


def test_another_key_is_refused_and_the_scheme_must_match_the_key():
    other = load_signing_key(generate_signing_key())
    public = [load_public_key(PUBLIC)]
    assert verify(BODY, headers_for([sign_ed25519(other, MSG_ID, T, BODY)]), now=T, public_keys=public) \
        == "signature mismatch"
    # an HMAC signature is no use to a receiver that trusts public keys only, and vice versa
    assert verify(BODY, headers_for([sign_hmac(SECRET, MSG_ID, T, BODY)]), now=T, public_keys=public) \
        == "signature mismatch"
    assert verify(BODY, headers_for([sign_ed25519(signing_key(), MSG_ID, T, BODY)]), now=T, secret=SECRET) \
        == "signature mismatch"
    assert verify(BODY, headers_for([sign_hmac(SECRET, MSG_ID, T, BODY)]), now=T, secret=SECRET) is None
    assert verify(BODY, headers_for([sign_hmac(SECRET, MSG_ID, T, BODY)]), now=T, secret=SECRET + "x") \
        == "signature mismatch"


@pytest.mark.parametrize("now,tolerance,expected", [
    (T, 300, None), (T + 300, 300, None), (T - 300, 300, None),
    (T + 301, 300, "timestamp outside tolerance"), (T - 301, 300, "timestamp outside tolerance"),
    (T + 86400, 300, "timestamp outside tolerance"), (T + 3600, 7200, None),
])
def test_timestamp_tolerance(now, tolerance, expected):
    h = headers_for([sign_ed25519(signing_key(), MSG_ID, T, BODY)])
    assert verify(BODY, h, now=now, public_keys=[load_public_key(PUBLIC)], tolerance_s=tolerance) == expected


@pytest.mark.parametrize("drop", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header(drop):
    h = headers_for([sign_ed25519(signing_key(), MSG_ID, T, BODY)])
    del h[drop]
    assert verify(BODY, h, now=T, public_keys=[load_public_key(PUBLIC)]).startswith("missing")


@pytest.mark.parametrize("t", ["", "abc", "-5", "1.5", "\u00b2", "1700000000 "])
def test_malformed_timestamp(t):
    h = headers_for([sign_ed25519(signing_key(), MSG_ID, T, BODY)])
    h["webhook-timestamp"] = t
    assert verify(BODY, h, now=T, public_keys=[load_public_key(PUBLIC)]) in (
        "malformed webhook headers", "missing webhook-id, webhook-timestamp or webhook-signature")


# ---------------------------------------------------------------- several signatures


def test_parse_signatures_skips_malformed_entries():
    good = sign_ed25519(signing_key(), MSG_ID, T, BODY)
    parsed = parse_signatures(f"  v1,AAAA  garbage v1a, ,x v2,!!notbase64!! {good} v1a")
    assert [v for v, _ in parsed] == ["v1", "v1a"]
    assert parsed[1][1] == base64.b64decode(good.split(",", 1)[1])


def test_any_one_valid_signature_among_several_verifies():
    public = [load_public_key(PUBLIC)]
    good = sign_ed25519(signing_key(), MSG_ID, T, BODY)
    junk = ["v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            "v1a,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="]
    assert verify(BODY, headers_for([*junk, good]), now=T, public_keys=public) is None
    assert verify(BODY, headers_for([good, *junk]), now=T, public_keys=public) is None
    assert verify(BODY, headers_for(junk), now=T, public_keys=public) == "signature mismatch"


def test_rotation_signed_with_both_keys_verifies_with_either():
    new = load_signing_key(generate_signing_key())
    old = signing_key()
    h = headers_for([sign_ed25519(new, MSG_ID, T, BODY), sign_ed25519(old, MSG_ID, T, BODY)])
    assert verify(BODY, h, now=T, public_keys=[old.public_key()]) is None  # a receiver that has not refreshed
    assert verify(BODY, h, now=T, public_keys=[new.public_key()]) is None
    assert verify(BODY, h, now=T, public_keys=[]) == "signature mismatch"


# ---------------------------------------------------------------- interoperability


def test_off_the_shelf_verifier_accepts_our_hmac_form():
    # `standardwebhooks` (the Standard Webhooks project's Python library) implements v1 only.
    now = int(datetime.now(UTC).timestamp())
    ours = sign_hmac(SECRET, MSG_ID, now, BODY)
    theirs = Webhook(whsec_form(SECRET))
    assert theirs.sign(MSG_ID, datetime.fromtimestamp(now, UTC), BODY.decode()) == ours
    # our full header, v1 beside v1a signatures, as a "both" subscription gets it
    h = headers_for([ours, sign_ed25519(signing_key(), MSG_ID, now, BODY)], t=now)
    assert theirs.verify(BODY, h) == {"header": {"action": "notify"}}
    with pytest.raises(WebhookVerificationError):
        theirs.verify(BODY.replace(b"notify", b"notifx"), h)
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec_form(SECRET + "x")).verify(BODY, h)
    with pytest.raises(WebhookVerificationError):  # a v1a-only header has nothing it can check
        theirs.verify(BODY, headers_for([sign_ed25519(signing_key(), MSG_ID, now, BODY)], t=now))


def test_v1a_verifies_by_the_spec_with_cryptography_alone():
    # What any Ed25519 verifier does: decode whpk_, take the base64 signature after "v1a,", verify it
    # over "{webhook-id}.{webhook-timestamp}.{body}".
    h = headers_for([sign_ed25519(signing_key(), MSG_ID, T, BODY)])
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(PUBLIC.removeprefix("whpk_")))
    version, sig = h["webhook-signature"].split(",", 1)
    assert version == "v1a"
    public.verify(base64.b64decode(sig), f'{h["webhook-id"]}.{h["webhook-timestamp"]}.'.encode() + BODY)
    with pytest.raises(InvalidSignature):
        public.verify(base64.b64decode(sig), f'{h["webhook-id"]}.{h["webhook-timestamp"]}.'.encode() + BODY + b" ")


# ---------------------------------------------------------------- keys


def test_generated_keys_load_and_differ():
    a, b = generate_signing_key(), generate_signing_key()
    assert a.startswith("whsk_") and a != b
    assert len(base64.b64decode(a.removeprefix("whsk_"))) == 32
    load_signing_key(a.removeprefix("whsk_"))  # the prefix is optional


@pytest.mark.parametrize("bad", ["whsk_", "whsk_not*base64", "whsk_" + base64.b64encode(b"short").decode(),
                                 "whsk_" + base64.b64encode(bytes(64)).decode()])
def test_malformed_keys_are_refused_without_repeating_them(bad):
    with pytest.raises(MalformedKey) as e:
        load_signing_key(bad, "REGSOSEK_WEBHOOK_SIGNING_KEY")
    assert "REGSOSEK_WEBHOOK_SIGNING_KEY" in str(e.value)
    if bad.removeprefix("whsk_"):
        assert bad.removeprefix("whsk_") not in str(e.value)
    assert not issubclass(MalformedKey, ValueError)
    with pytest.raises(MalformedKey):
        load_public_key(bad.replace("whsk_", "whpk_"))


def test_the_development_key_is_published_so_refused_in_production():
    assert LOCAL_DEVELOPMENT_SIGNING_KEY in DEVELOPMENT_KEYS
    load_signing_key(LOCAL_DEVELOPMENT_SIGNING_KEY)


def test_whsec_form_is_the_secret_bytes():
    assert base64.b64decode(whsec_form(SECRET).removeprefix("whsec_")) == SECRET.encode()
