"""Intake's configuration (environment, prefix REGSOSEK_)."""

from datetime import date

from regsosek.settings import TokenSettings


class IntakeSettings(TokenSettings):
    service_name: str = "intake"
    http_port: int = 8001
    collection_start: date = date(2022, 10, 15)
    collection_end: date = date(2022, 11, 20)
    max_batch_items: int = 500
