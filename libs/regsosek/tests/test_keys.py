"""Production refuses missing, development or short keys; the error names the variable, never the value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from regsosek.keys import DEVELOPMENT_KEYS, MIN_SECRET_BYTES, InsecureSecret, require_strong_secret
from regsosek.settings import ServiceSettings, TokenSettings

STRONG = "a9Vq3x7LmZp2Rt8Kc4Wy6Hn1Bd5Gf0Js"  # 32 bytes
# the HS256 key this repository once shipped for bearer tokens: published, so never a secret
LOCAL_DEFAULT_SECRET = "local-development-secret-change-me-0123456789"
PROD_AUTH = {"REGSOSEK_AUTH_JWKS_URL": "https://idp.example.go.id/jwks", "REGSOSEK_AUTH_ISSUER": "https://idp.example.go.id",
             "REGSOSEK_AUTH_AUDIENCE": "regsosek-intake"}


def test_the_code_default_is_a_known_development_key():
    assert LOCAL_DEFAULT_SECRET in DEVELOPMENT_KEYS
    assert len(STRONG.encode()) == MIN_SECRET_BYTES == 32


@pytest.mark.parametrize("value,needle", [
    (None, "must be set"), ("", "must be set"), ("  \t", "must be set"),
    (LOCAL_DEFAULT_SECRET, "development key"), (f" {LOCAL_DEFAULT_SECRET}\n", "development key"),
    ("local-only-signing-key-not-for-production", "development key"),
    (STRONG[:31], "at least 32 bytes"),
    ("é" * 15, "at least 32 bytes"),  # 30 bytes in UTF-8: bytes count, not characters
])
def test_production_refusals(value, needle):
    with pytest.raises(InsecureSecret) as e:
        require_strong_secret("REGSOSEK_SOME_KEY", value, "production")
    msg = str(e.value)
    assert msg.startswith("REGSOSEK_SOME_KEY ") and needle in msg
    if value and value.strip():
        assert value.strip() not in msg and value.strip()[:8] not in msg


@pytest.mark.parametrize("value", [STRONG, "é" * 16, "x" * 200])
def test_production_accepts_strong_keys(value):
    require_strong_secret("REGSOSEK_SOME_KEY", value, "production")


@pytest.mark.parametrize("env", ["local", "test", ""])
def test_other_environments_are_not_checked(env):
    require_strong_secret("REGSOSEK_SOME_KEY", None, env)
    require_strong_secret("REGSOSEK_SOME_KEY", "short", env)


def test_insecure_secret_is_not_a_value_error():
    # pydantic turns a ValueError from a validator into a ValidationError that repeats the input (the key)
    assert not issubclass(InsecureSecret, ValueError)


@pytest.mark.parametrize("secret", [LOCAL_DEFAULT_SECRET, STRONG, "x" * 200])
def test_token_settings_refuse_any_shared_auth_secret_in_production(monkeypatch, secret):
    """HS256 is gone: a strong shared secret is refused as much as a weak one (every verifier could mint)."""
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    for k, v in PROD_AUTH.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REGSOSEK_AUTH_SECRET", secret)
    with pytest.raises(InsecureSecret) as e:
        TokenSettings()
    assert "REGSOSEK_AUTH_SECRET" in str(e.value) and "could mint tokens" in str(e.value)
    assert secret not in str(e.value)
    monkeypatch.delenv("REGSOSEK_AUTH_SECRET")
    assert TokenSettings().token_issuer == "https://idp.example.go.id"


def test_token_settings_need_no_secret_locally(monkeypatch):
    monkeypatch.delenv("REGSOSEK_ENV", raising=False)
    monkeypatch.delenv("REGSOSEK_AUTH_SECRET", raising=False)
    s = TokenSettings()
    assert (s.token_issuer, s.token_audience) == ("regsosek-local", "regsosek-regsosek")


def test_other_settings_errors_do_not_repeat_the_environment(monkeypatch):
    monkeypatch.setenv("REGSOSEK_AUTH_SECRET", STRONG)
    monkeypatch.setenv("REGSOSEK_HTTP_PORT", "not-a-port")
    with pytest.raises(Exception) as e:
        TokenSettings()
    assert "http_port" in str(e.value) and STRONG not in str(e.value) and "not-a-port" not in str(e.value)


def test_http_body_limit_setting(monkeypatch):
    monkeypatch.delenv("REGSOSEK_HTTP_MAX_BODY_BYTES", raising=False)
    assert ServiceSettings().http_max_body_bytes == 8 * 1024 * 1024
    monkeypatch.setenv("REGSOSEK_HTTP_MAX_BODY_BYTES", "1024")
    assert ServiceSettings().http_max_body_bytes == 1024
    monkeypatch.setenv("REGSOSEK_HTTP_MAX_BODY_BYTES", "0")
    with pytest.raises(ValidationError):
        ServiceSettings()
