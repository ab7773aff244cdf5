"""Verify's configuration (environment, prefix REGSOSEK_)."""

from __future__ import annotations

from pydantic import model_validator

from regsosek.keys import require_strong_secret
from regsosek.settings import ServiceSettings


class VerifySettings(ServiceSettings):
    service_name: str = "verify"
    http_port: int = 8002
    # An interview whose SLS roster has not arrived after this long is flagged "no roster".
    hold_timeout_s: float = 3 * 24 * 3600
    hold_sweep_interval_s: float = 60.0
    # Key for the NIK pseudonyms in nik_claims (keyed hash; the clear NIK is not needed). The default is
    # public: in production REGSOSEK_NIK_HASH_KEY must be set, secret and at least 32 bytes.
    nik_hash_key: str = "local-development-nik-key"

    @model_validator(mode="after")
    def _strong_nik_key_in_production(self) -> VerifySettings:
        require_strong_secret("REGSOSEK_NIK_HASH_KEY", self.nik_hash_key, self.env)
        return self
