"""Configuration from the environment (prefix REGSOSEK_). One subclass per service."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from regsosek.auth import LOCAL_DEFAULT_SECRET


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REGSOSEK_", extra="ignore")

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
    relay_batch_size: int = 1000
    relay_idle_poll_s: float = 0.05
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0

    log_level: str = "INFO"

    def dsn(self) -> str:
        return self.database_url or f"{self.pg_url_base}/{self.service_name}"

    topic_prefix: str = ""  # REGSOSEK_TOPIC_PREFIX: isolates a test run's topics and groups on a shared broker

    @property
    def consumer_group(self) -> str:
        return f"{self.topic_prefix}regsosek-{self.service_name}"


class TokenSettings(ServiceSettings):
    """A service that verifies bearer tokens (intake, notify)."""

    # HS256 key for bearer tokens; the local default is refused in production.
    auth_secret: str = LOCAL_DEFAULT_SECRET

    @model_validator(mode="after")
    def _secret_set_in_production(self) -> TokenSettings:
        if self.env == "production" and self.auth_secret == LOCAL_DEFAULT_SECRET:
            raise ValueError("REGSOSEK_AUTH_SECRET must be set in production")
        return self
