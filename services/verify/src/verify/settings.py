"""Verify's configuration (environment, prefix REGSOSEK_)."""

from regsosek.settings import ServiceSettings


class VerifySettings(ServiceSettings):
    service_name: str = "verify"
    http_port: int = 8002
    # An interview whose SLS roster has not arrived after this long is flagged "no roster".
    hold_timeout_s: float = 3 * 24 * 3600
    hold_sweep_interval_s: float = 60.0
    # Key for the NIK pseudonyms in nik_claims (keyed hash; the clear NIK is not needed).
    nik_hash_key: str = "local-development-nik-key"
