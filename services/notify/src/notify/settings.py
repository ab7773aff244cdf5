"""Notify's configuration (environment, prefix REGSOSEK_)."""

from regsosek.settings import TokenSettings


class NotifySettings(TokenSettings):
    service_name: str = "notify"
    http_port: int = 8004
    delivery_batch_size: int = 200          # events per POST
    delivery_timeout_s: float = 10.0        # one POST, from connecting to the whole answer
    delivery_idle_poll_s: float = 0.05
    delivery_concurrency: int = 64          # subscriptions delivered at the same time by one instance
    resolve_timeout_s: float = 5.0          # production: resolving a callback's name
    retry_base_s: float = 0.5
    retry_cap_s: float = 300.0
    suspend_after_failures: int = 20        # consecutive failed attempts before a subscription is suspended
    metrics_refresh_s: float = 5.0          # how often the per-subscription lag gauges are read from the database
