"""Configuration from the environment (prefix REGSOSEK_). One subclass per service."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from regsosek.auth import LOCAL_DEFAULT_SECRET
from regsosek.keys import require_strong_secret


class ServiceSettings(BaseSettings):
    # hide_input_in_errors: a settings error must not repeat the environment's values (keys among them)
    model_config = SettingsConfigDict(env_prefix="REGSOSEK_", extra="ignore", hide_input_in_errors=True)

    service_name: str = "regsosek"
    env: str = Field("local", description="local | production")
    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: str = ""  # defaults to the service's own database on the local stack
    pg_url_base: str = "postgresql://regsosek@127.0.0.1:15432"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    db_pool_max: int = 12

    consumer_max_records: int = 500
    consumer_batch_timeout_ms: int = 50
    # partitions of one fetched batch applied at the same time, each on its own connection
    consumer_partition_concurrency: int = 4
    # REGSOSEK_CONSUMER_MAX_RECORD_BYTES: a consumed record larger than this (key, value and
    # headers) is dead-lettered unread; the topics accept up to 2 MiB (topics.yaml).
    consumer_max_record_bytes: int = Field(1024 * 1024, gt=0)
    relay_batch_size: int = 1000
    relay_idle_poll_s: float = 0.05
    # The relay counts as stalled (readiness 503, regsosek_relay_stalled 1) when the outbox
    # has rows and none has left it for this long.
    relay_stall_s: float = 60.0
    # How often every instance counts the outbox and outbox_rejected for the metrics and
    # the stall check.
    relay_monitor_interval_s: float = 5.0
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0

    log_level: str = "INFO"
    # REGSOSEK_HTTP_MAX_BODY_BYTES: larger request bodies get 413 before they are read (regsosek.http_limits).
    # 8 MiB fits intake's largest batch (500 interviews) at ~16 KiB each; a typical family is 1.5-3 KiB,
    # a 40-member family with every answer ~30 KiB.
    http_max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)

    def dsn(self) -> str:
        return self.database_url or f"{self.pg_url_base}/{self.service_name}"

    topic_prefix: str = ""  # REGSOSEK_TOPIC_PREFIX: isolates a test run's topics and groups on a shared broker

    @property
    def consumer_group(self) -> str:
        return f"{self.topic_prefix}regsosek-{self.service_name}"


class TokenSettings(ServiceSettings):
    """A service that verifies bearer tokens (intake, notify)."""

    # HS256 key for bearer tokens; in production a missing, development or short (< 32 bytes) key is refused.
    auth_secret: str = LOCAL_DEFAULT_SECRET

    @model_validator(mode="after")
    def _strong_secret_in_production(self) -> TokenSettings:
        require_strong_secret("REGSOSEK_AUTH_SECRET", self.auth_secret, self.env)
        return self
