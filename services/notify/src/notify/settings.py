"""Notify's configuration (environment, prefix REGSOSEK_)."""

from regsosek.auth import LOCAL_DEFAULT_SECRET
from regsosek.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    service_name: str = "notify"
    http_port: int = 8004
    auth_secret: str = LOCAL_DEFAULT_SECRET
    delivery_batch_size: int = 200          # events per POST
    delivery_timeout_s: float = 10.0
    delivery_idle_poll_s: float = 0.05
    retry_base_s: float = 0.5
    retry_cap_s: float = 300.0
    suspend_after_failures: int = 20        # consecutive failed attempts before a subscription is suspended
