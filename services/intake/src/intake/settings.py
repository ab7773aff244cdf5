"""Intake's configuration (environment, prefix REGSOSEK_)."""

from datetime import date

from regsosek.auth import LOCAL_DEFAULT_SECRET
from regsosek.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    service_name: str = "intake"
    http_port: int = 8001
    # Signing key for bearer tokens (HS256). The local default is for development only;
    # production must set REGSOSEK_AUTH_SECRET (startup refuses the default there).
    auth_secret: str = LOCAL_DEFAULT_SECRET
    collection_start: date = date(2022, 10, 15)
    collection_end: date = date(2022, 11, 20)
    max_request_bytes: int = 8 * 1024 * 1024
    max_batch_items: int = 500
