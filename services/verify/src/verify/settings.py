"""Verify's configuration (environment, prefix REGSOSEK_)."""

from __future__ import annotations

from pydantic import Field, model_validator

from regsosek.keys import require_strong_secret
from regsosek.pseudonyms import DEVELOPMENT_NIK_HASH_KEY
from regsosek.settings import TokenSettings


class VerifySettings(TokenSettings):  # bearer tokens: GET /v1/progress (REGSOSEK_AUTH_*)
    service_name: str = "verify"
    http_port: int = 8002
    # An interview whose SLS roster has not arrived after this long is flagged "no roster".
    hold_timeout_s: float = 3 * 24 * 3600
    hold_sweep_interval_s: float = 60.0
    # An update that counts about a family not verified yet (not registered yet, held for its roster, or
    # flagged) is kept and applied once the family is verified; still waiting after this long, it gets an
    # update_not_applicable flag (verify.updates). The same sweep looks for both.
    update_hold_timeout_s: float = Field(default=30 * 24 * 3600, gt=0)
    # Retention (docs/RETENTION.md): a decided family's interview body (pseudonymised answers, birth
    # dates, NIK hashes) is emptied this many days after the decision once its state is final
    # (domain.BODY_EXPIRES: rejected and non-response forms; a verified family's stays while it is
    # registered, for updates); ids, outcome and roster match stay. Intake keeps what it received longer.
    interview_body_retention_days: int = Field(default=90, gt=0)
    # Verify needs no NIK hash key: intake publishes NIKs and KK numbers as keyed hashes and verify
    # compares those (regsosek.pseudonyms). Only records of the v1 shapes (identifiers in clear,
    # from before pseudonymised events: retained on the topics, re-driven dead letters, rows stored
    # before migration 004) need it, to be hashed on arrival exactly as intake hashes: set
    # REGSOSEK_LEGACY_NIK_HASH_KEY (intake's REGSOSEK_NIK_HASH_KEY) only for the rollout and the
    # one-off `python -m verify.pseudonymise`; without it such a record is dead-lettered. Outside
    # production it defaults to the development key.
    legacy_nik_hash_key: str = ""

    def legacy_key(self) -> str | None:
        """The key for v1 records, or None (production without REGSOSEK_LEGACY_NIK_HASH_KEY)."""
        if self.legacy_nik_hash_key.strip():
            return self.legacy_nik_hash_key
        return None if self.env.strip().lower() == "production" else DEVELOPMENT_NIK_HASH_KEY

    @model_validator(mode="after")
    def _strong_legacy_key_in_production(self) -> VerifySettings:
        if self.legacy_nik_hash_key.strip():
            require_strong_secret("REGSOSEK_LEGACY_NIK_HASH_KEY", self.legacy_nik_hash_key, self.env)
        return self
