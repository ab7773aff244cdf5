"""The one rule for secret keys in production (token signing key, intake's NIK hash key, ...).

With `REGSOSEK_ENV=production` a service refuses to start when a key is missing, is one of the
development keys this repository publishes, or is shorter than `MIN_SECRET_BYTES` (32 bytes,
the HMAC-SHA256 block-size guidance; `openssl rand -base64 48` gives 64). The error names the
variable and never prints the value, not even part of it.

The error is not a `ValueError` on purpose: pydantic wraps a `ValueError` raised in a validator
into a ValidationError whose text repeats the validated input, i.e. the key.
"""

from __future__ import annotations

MIN_SECRET_BYTES = 32

# Keys written in this repository (code defaults, docker-compose, docs): public, so never secret.
DEVELOPMENT_KEYS = frozenset({
    "local-development-secret-change-me-0123456789",  # the HS256 token key regsosek.auth once shipped
    "local-only-signing-key-not-for-production",  # docker-compose.yml
    "local-development-nik-key",  # the NIK hash key default (regsosek.pseudonyms, intake)
    "local-development-notify-nik-lookup-key",  # notify's member index key default (notify.settings)
    "whsk_cmVnc29zZWstbG9jYWwtZGV2LXdlYmhvb2sta2V5ISE=",  # regsosek.standard_webhooks.LOCAL_DEVELOPMENT_SIGNING_KEY
})


class InsecureSecret(RuntimeError):
    """A production service was given a missing, development or too short key."""


def require_strong_secret(name: str, value: str | None, env: str) -> None:
    """Raise `InsecureSecret` naming `name` (e.g. REGSOSEK_NIK_HASH_KEY) when `env` is production and
    `value` is missing, a development key or shorter than MIN_SECRET_BYTES bytes. Other envs: no check."""
    if env.strip().lower() != "production":
        return
    if value is None or not value.strip():
        raise InsecureSecret(f"{name} must be set in production")
    if value in DEVELOPMENT_KEYS or value.strip() in DEVELOPMENT_KEYS:
        raise InsecureSecret(f"{name} is a development key published in this repository; set a secret one in production")
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise InsecureSecret(f"{name} must be at least {MIN_SECRET_BYTES} bytes in production "
                             "(generate one with: openssl rand -base64 48)")
