"""Notify's webhook signing without a broker or database: the signing key from the environment (refused
in production when missing, published or malformed, never repeated in an error), rotation, the
published key set, and the signature headers each subscription choice gets."""

from __future__ import annotations

import base64
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from notify.callbacks import batch_key, signature_headers
from notify.settings import NotifySettings
from notify.webhook_keys import webhook_keys_router
from regsosek.crypto import DEVELOPMENT_DATA_KEY, DEVELOPMENT_IDENTITY_KEY
from regsosek.keys import InsecureSecret
from regsosek.signing import HEADER as LEGACY_HEADER
from regsosek.signing import verify as verify_legacy
from regsosek.standard_webhooks import (
    LOCAL_DEVELOPMENT_SIGNING_KEY,
    generate_signing_key,
    load_public_key,
    load_signing_key,
    public_key_from_jwk,
    public_key_text,
    thumbprint,
    verify,
    whsec_form,
)

# production needs the identity provider's keys, issuer and audience for bearer tokens
PROD_AUTH = {"REGSOSEK_AUTH_JWKS_URL": "https://idp.example.go.id/jwks", "REGSOSEK_AUTH_ISSUER": "https://idp.example.go.id",
             "REGSOSEK_AUTH_AUDIENCE": "regsosek-notify",
             "REGSOSEK_IDENTITY_KEYS": "feed1:" + base64.b64encode(b"f" * 32).decode(),  # the identity feed's
             "REGSOSEK_NIK_LOOKUP_KEY": "member-index-key-" + "x" * 32}
SECRET = "subscription-secret-0123456789abcdef"
BODY = b'{"header":{"message_id":"m"},"message":{"notify_event":[]}}'


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("REGSOSEK_ENV", "REGSOSEK_WEBHOOK_SIGNING_KEY", "REGSOSEK_WEBHOOK_SIGNING_KEY_FILE",
                 "REGSOSEK_WEBHOOK_SIGNING_KEY_ID", "REGSOSEK_WEBHOOK_PREVIOUS_SIGNING_KEY",
                 "REGSOSEK_WEBHOOK_PREVIOUS_SIGNING_KEY_FILE", "REGSOSEK_WEBHOOK_PREVIOUS_SIGNING_KEY_ID"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- the key from settings


def test_local_runs_sign_with_the_published_development_key():
    (k,) = NotifySettings().webhook_signing_keys()
    assert k.status == "current"
    assert public_key_text(k.key.public_key()) == public_key_text(load_signing_key(LOCAL_DEVELOPMENT_SIGNING_KEY).public_key())
    assert k.kid == thumbprint(k.key.public_key())


@pytest.mark.parametrize("value,needle", [
    ("", "must be set in production"),
    (LOCAL_DEVELOPMENT_SIGNING_KEY, "development key"),
    (LOCAL_DEVELOPMENT_SIGNING_KEY.removeprefix("whsk_"), "development key"),  # without its prefix too
    ("whsk_" + base64.b64encode(b"sixteen-byte-key").decode(), "32-byte"),
    ("whsk_this-is-not-base64-at-all-but-long-enough-to-pass", "not base64"),
])
def test_production_refuses_a_missing_development_or_malformed_key(monkeypatch, value, needle):
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    for k, v in PROD_AUTH.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REGSOSEK_WEBHOOK_SIGNING_KEY", value)
    with pytest.raises(InsecureSecret) as e:
        NotifySettings()
    assert "REGSOSEK_WEBHOOK_SIGNING_KEY" in str(e.value) and needle in str(e.value)
    if value:
        assert value.removeprefix("whsk_") not in str(e.value)


def test_production_takes_a_generated_key_from_a_file_which_wins(monkeypatch, tmp_path):
    key = generate_signing_key()
    (tmp_path / "key").write_text(key + "\n")
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    for k, v in PROD_AUTH.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REGSOSEK_WEBHOOK_SIGNING_KEY", LOCAL_DEVELOPMENT_SIGNING_KEY)
    monkeypatch.setenv("REGSOSEK_WEBHOOK_SIGNING_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("REGSOSEK_WEBHOOK_SIGNING_KEY_ID", "2026-01")
    (k,) = NotifySettings().webhook_signing_keys()
    assert (k.kid, k.status) == ("2026-01", "current")
    assert public_key_text(k.key.public_key()) == public_key_text(load_signing_key(key).public_key())


def test_an_unreadable_key_file_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("REGSOSEK_WEBHOOK_SIGNING_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(InsecureSecret, match="REGSOSEK_WEBHOOK_SIGNING_KEY_FILE cannot be read"):
        NotifySettings()


def test_rotation_lists_the_previous_key_after_the_current_one():
    new, old = generate_signing_key(), generate_signing_key()
    keys = NotifySettings(webhook_signing_key=new, webhook_signing_key_id="k2",
                          webhook_previous_signing_key=old, webhook_previous_signing_key_id="k1").webhook_signing_keys()
    assert [(k.kid, k.status) for k in keys] == [("k2", "current"), ("k1", "previous")]
    with pytest.raises(InsecureSecret, match="same key id"):
        NotifySettings(webhook_signing_key=new, webhook_previous_signing_key=new)


# ---------------------------------------------------------------- GET /v1/webhook-keys


def keys_client(settings: NotifySettings) -> TestClient:
    app = FastAPI()
    app.include_router(webhook_keys_router(settings))
    return TestClient(app)


def test_published_keys_are_public_jwks_and_hold_no_secret():
    new, old = generate_signing_key(), generate_signing_key()
    s = NotifySettings(webhook_signing_key=new, webhook_signing_key_id="k2", webhook_previous_signing_key=old,
                       webhook_previous_signing_key_id="k1")
    r = keys_client(s).get("/v1/webhook-keys")  # no token
    assert r.status_code == 200 and "max-age" in r.headers["cache-control"]
    keys = r.json()["keys"]
    assert [(k["kid"], k["status"], k["kty"], k["crv"], k["alg"]) for k in keys] == [
        ("k2", "current", "OKP", "Ed25519", "EdDSA"), ("k1", "previous", "OKP", "Ed25519", "EdDSA")]
    for k, secret in zip(keys, (new, old), strict=True):
        expected = public_key_text(load_signing_key(secret).public_key())
        assert public_key_text(public_key_from_jwk(k)) == expected == k["whpk"]
        assert "d" not in k
        assert secret.removeprefix("whsk_") not in r.text


# ---------------------------------------------------------------- headers per subscription choice


def _headers(scheme: str, secret: str | None, settings: NotifySettings, t: int | None = None) -> tuple[dict, str, int]:
    msg_id = batch_key([{"event_id": "e1"}, {"event_id": "e2"}])
    t = int(time.time()) if t is None else t
    return signature_headers(scheme, secret, settings.webhook_signing_keys(), msg_id, t, BODY), msg_id, t


def _published(settings: NotifySettings):
    return [k.key.public_key() for k in settings.webhook_signing_keys()]


def test_ed25519_subscription_gets_standard_headers_only():
    s = NotifySettings(webhook_signing_key=generate_signing_key())
    h, msg_id, t = _headers("ed25519", None, s)
    assert h["webhook-id"] == msg_id and h["webhook-timestamp"] == str(t)
    assert LEGACY_HEADER not in h
    assert [sig.split(",")[0] for sig in h["webhook-signature"].split(" ")] == ["v1a"]
    assert verify(BODY, h, now=t, public_keys=_published(s)) is None
    assert verify(BODY + b" ", h, now=t, public_keys=_published(s)) == "signature mismatch"
    assert verify(BODY, h, now=t, public_keys=[load_public_key(public_key_text(
        load_signing_key(generate_signing_key()).public_key()))]) == "signature mismatch"


def test_during_rotation_each_webhook_carries_a_signature_per_key():
    s = NotifySettings(webhook_signing_key=generate_signing_key(), webhook_previous_signing_key=generate_signing_key())
    h, _, t = _headers("ed25519", None, s)
    sigs = h["webhook-signature"].split(" ")
    assert [x.split(",")[0] for x in sigs] == ["v1a", "v1a"]
    current, previous = _published(s)
    assert verify(BODY, h, now=t, public_keys=[previous]) is None  # a programme that has not refreshed yet
    assert verify(BODY, h, now=t, public_keys=[current]) is None


def test_hmac_subscription_keeps_the_old_header_and_gets_v1():
    s = NotifySettings()
    h, msg_id, t = _headers("hmac", SECRET, s)
    assert verify_legacy(SECRET, h[LEGACY_HEADER], BODY, now=t) is None  # current receivers keep working
    assert [sig.split(",")[0] for sig in h["webhook-signature"].split(" ")] == ["v1"]
    assert Webhook(whsec_form(SECRET)).verify(BODY, h, json_parse=False) is None  # the off-the-shelf verifier
    assert verify(BODY, h, now=t, public_keys=_published(s)) == "signature mismatch"  # nothing asymmetric


def test_both_carries_every_form():
    s = NotifySettings()
    h, _, t = _headers("both", SECRET, s)
    assert [sig.split(",")[0] for sig in h["webhook-signature"].split(" ")] == ["v1", "v1a"]
    assert verify_legacy(SECRET, h[LEGACY_HEADER], BODY, now=t) is None
    assert verify(BODY, h, now=t, public_keys=_published(s)) is None
    assert verify(BODY, h, now=t, secret=SECRET) is None


def test_an_hmac_subscription_without_a_secret_or_an_unknown_scheme_is_an_error():
    with pytest.raises(ValueError):
        _headers("hmac", None, NotifySettings())
    with pytest.raises(ValueError):
        _headers("rsa", SECRET, NotifySettings())


@pytest.mark.parametrize("value", ["", f"feed1:{DEVELOPMENT_IDENTITY_KEY}", f"feed1:{DEVELOPMENT_DATA_KEY}",
                                   "feed1:" + base64.b64encode(b"short").decode()])
def test_production_refuses_missing_development_or_short_identity_feed_keys(monkeypatch, value):
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    for k, v in PROD_AUTH.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REGSOSEK_WEBHOOK_SIGNING_KEY", generate_signing_key())
    monkeypatch.setenv("REGSOSEK_IDENTITY_KEYS", value)
    with pytest.raises(InsecureSecret) as e:
        NotifySettings()
    assert "REGSOSEK_IDENTITY_KEYS" in str(e.value)
    assert not value or value.partition(":")[2] not in str(e.value)


@pytest.mark.parametrize("value", ["", "local-development-notify-nik-lookup-key", "short"])
def test_production_refuses_a_missing_development_or_short_member_index_key(monkeypatch, value):
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    for k, v in PROD_AUTH.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REGSOSEK_WEBHOOK_SIGNING_KEY", generate_signing_key())
    monkeypatch.setenv("REGSOSEK_NIK_LOOKUP_KEY", value)
    with pytest.raises(InsecureSecret, match="REGSOSEK_NIK_LOOKUP_KEY"):
        NotifySettings()
