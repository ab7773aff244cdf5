"""The console's configuration (environment, prefix REGSOSEK_)."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from regsosek.settings import TokenSettings


class ConsoleSettings(TokenSettings):
    service_name: str = "console"
    http_port: int = 8005
    # The owning services' public APIs, called server-side with the signed-in person's token.
    intake_url: str = "http://127.0.0.1:8001"
    notify_url: str = "http://127.0.0.1:8004"
    classify_url: str = "http://127.0.0.1:8003"  # its read-only status API: policy in force, re-ranks, replays
    upstream_timeout_s: float = Field(default=10.0, gt=0)
    # How often an open page asks for fresh numbers (progressive JavaScript; the page works without it).
    live_interval_s: float = Field(default=3.0, gt=0)
    # Local sign-in: lifetime of the token the console issues (at most the verifiers' maximum).
    session_ttl_s: int = Field(default=8 * 3600, gt=0, le=12 * 3600)
    # The collection period, for the daily plan (every expected family interviewed evenly over it).
    collection_start: date = date(2022, 10, 15)
    collection_end: date = date(2022, 11, 20)

    @property
    def production(self) -> bool:
        return self.env.strip().lower() == "production"
