"""deploy/: the services verify the identity provider's tokens (issuer, JWKS URL, their own
audience) and no shared token secret is deployed; the production settings accept that set-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from compose_services import SERVICES, settings_class, verifies_tokens

from console.session import local_token
from regsosek.auth import Role
from regsosek.settings import TokenSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TOKEN_SERVICES = [s for s in SERVICES if verifies_tokens(s)]


def _config() -> dict[str, str]:
    kust = yaml.safe_load((DEPLOY / "services" / "kustomization.yaml").read_text())
    (cm,) = [g for g in kust["configMapGenerator"] if g["name"] == "regsosek-config"]
    return dict(item.split("=", 1) for item in cm["literals"])


def _env(service: str) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "services" / f"{service}.yaml").read_text()) if d]
    (dep,) = [d for d in docs if d.get("kind") == "Deployment"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_no_token_signing_secret_is_deployed():
    text = "\n".join(p.read_text() for p in DEPLOY.rglob("*.yaml"))
    assert "REGSOSEK_AUTH_SECRET" not in text and "regsosek-auth" not in text


def test_each_token_service_starts_with_the_deployed_auth_settings(monkeypatch):
    config = _config()
    assert config["REGSOSEK_AUTH_JWKS_URL"].startswith("https://")
    for service in TOKEN_SERVICES:
        env = {**config, "REGSOSEK_AUTH_AUDIENCE": _env(service)["REGSOSEK_AUTH_AUDIENCE"]["value"]}
        _only(monkeypatch, {k: v for k, v in env.items() if k.startswith("REGSOSEK_AUTH_") or k == "REGSOSEK_ENV"})
        s = TokenSettings(service_name=service)  # the auth part of the production checks
        v = s.token_verifier()
        assert (v.issuer, v.audience) == (config["REGSOSEK_AUTH_ISSUER"], f"regsosek-{service}")


def _only(monkeypatch, env: dict[str, str]) -> None:
    """The process environment holds exactly these REGSOSEK_ variables."""
    for k in list(__import__("os").environ):
        if k.startswith("REGSOSEK_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_the_deployed_console_refuses_its_local_sign_in(monkeypatch):
    """With the deployed settings (REGSOSEK_ENV=production from regsosek-config, its audience) the
    console starts, accepts only the identity provider's tokens, and mints none itself."""
    values = {name: e["value"] for name, e in _env("console").items() if "value" in e}
    _only(monkeypatch, {k: v for k, v in {**_config(), **values}.items() if k.startswith("REGSOSEK_")
                        and not k.startswith("REGSOSEK_KAFKA_")})
    settings = settings_class("console")()
    assert settings.production
    assert settings.token_verifier().audience == "regsosek-console"
    with pytest.raises(PermissionError, match="refused in production"):
        local_token(settings, role=Role.ADMIN, subject="ops", areas=["64"], programmes=[])
