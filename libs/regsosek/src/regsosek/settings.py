"""Configuration from the environment (prefix REGSOSEK_). One subclass per service."""

from __future__ import annotations

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import SettingsConfigDict

from regsosek.auth import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_ALGORITHMS,
    DEFAULT_TOKEN_CACHE_SIZE,
    LOCAL_ISSUER,
    TokenVerifier,
    audience_of,
    local_jwks_file,
)
from regsosek.jwks import MAX_JWKS_BYTES, JwksFile, JwksSource, JwksUrl
from regsosek.kafka_security import KafkaClientSettings
from regsosek.keys import InsecureSecret


class ServiceSettings(KafkaClientSettings):
    # Kafka connection (bootstrap, TLS, SASL/SCRAM, refused in clear in production): regsosek.kafka_security
    # hide_input_in_errors: a settings error must not repeat the environment's values (keys among them)
    model_config = SettingsConfigDict(env_prefix="REGSOSEK_", extra="ignore", hide_input_in_errors=True)

    service_name: str = "regsosek"
    env: str = Field(default="local", description="local | production")
    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: str = ""  # defaults to the service's own database on the local stack
    pg_url_base: str = "postgresql://regsosek@127.0.0.1:15432"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # REGSOSEK_HTTP_WORKERS: processes serving HTTP on the one port (uvicorn workers); each is a whole
    # instance (its own pool, consumer and relay candidate). Only services that hand `serve` their app
    # factory take more than 1 (intake); README "Scale-out and sizing" says how to choose it.
    http_workers: int = Field(default=1, ge=1)
    db_pool_max: int = 12

    consumer_max_records: int = 500
    consumer_batch_timeout_ms: int = 50
    # Consumer-group membership (docs/ORDERING.md, "Joining and leaving a group"). aiokafka keeps
    # the membership (heartbeats, rejoining) in a background task of its own, so a batch being
    # applied never delays a rebalance; these bound how fast the group notices a change.
    # Session: an instance that dies without leaving (SIGKILL, a lost node) is removed, and its
    # partitions move, after this long without a heartbeat (aiokafka's default, stated here).
    consumer_session_timeout_ms: int = Field(default=10_000, ge=6_000)  # the broker's minimum is 6 s
    # Heartbeat: members learn that a rebalance started (an instance joined or left) from their next
    # heartbeat, and every member must rejoin before anyone gets partitions; at aiokafka's 3 s a join
    # waited up to 3 s for that alone. 1 s costs one small request per second per instance.
    consumer_heartbeat_interval_ms: int = Field(default=1_000, gt=0)
    # Rebalance: how long the broker waits for every member to rejoin before it drops the late ones
    # (who then join again as new members, which starts another rebalance). aiokafka's default is the
    # session timeout (10 s); an instance whose event loop is busy on a loaded machine (the watchdog
    # tolerates 10 s) could miss that. Must stay below the client's 40 s request timeout, which
    # bounds the join request the broker holds for this long.
    consumer_rebalance_timeout_ms: int = Field(default=30_000, gt=0, lt=40_000)
    # Poll interval: an instance that fetched nothing for this long (a batch retried through a long
    # database outage) leaves the group so that others can take its partitions, and joins again on
    # its next fetch (aiokafka's default, stated here).
    consumer_max_poll_interval_ms: int = Field(default=300_000, gt=0)
    # partitions of one fetched batch applied at the same time, each on its own connection
    consumer_partition_concurrency: int = 4
    # REGSOSEK_CONSUMER_MAX_RECORD_BYTES: a consumed record larger than this (key, value and
    # headers) is dead-lettered unread; the topics accept up to 2 MiB (topics.yaml).
    consumer_max_record_bytes: int = Field(default=1024 * 1024, gt=0)
    relay_batch_size: int = 1000
    # With nothing to send, the relay asks the outbox again for rows another process wrote (another
    # replica, a worker, a command) after relay_idle_poll_s, then twice as long each time it finds
    # none, up to relay_idle_poll_max_s; the first row found brings it back to relay_idle_poll_s. Its
    # own process's writes wake it at once. (Polling at 0.05 s throughout cost each idle service
    # ~0.011 cores and PostgreSQL ~0.004: BENCHMARKS.md, "Round 9b".)
    relay_idle_poll_s: float = Field(default=0.05, gt=0)
    relay_idle_poll_max_s: float = Field(default=1.0, gt=0)
    # The relay counts as stalled (readiness 503, regsosek_relay_stalled 1) when the outbox
    # has rows and none has left it for this long.
    relay_stall_s: float = 60.0
    # How often every instance counts the outbox and outbox_rejected for the metrics and
    # the stall check.
    relay_monitor_interval_s: float = 5.0
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0

    # REGSOSEK_MIGRATE_ON_START: apply pending migrations when the service starts (the local stack).
    # Production runs `python -m regsosek.migrate --service <name>` as its own step (deploy/: an init
    # container) and sets this false: the service then waits, unready, until the schema is current.
    migrate_on_start: bool = True
    # Readiness probes that query (database `select 1`, broker metadata, schema version): run every
    # REGSOSEK_PROBE_INTERVAL_S, each bounded by REGSOSEK_PROBE_TIMEOUT_S; /healthz reads the last result.
    probe_interval_s: float = Field(default=5.0, gt=0)
    probe_timeout_s: float = Field(default=2.0, gt=0)
    # Event-loop watchdog (regsosek.health): a heartbeat every REGSOSEK_LOOP_BEAT_S; a loop late by
    # REGSOSEK_LOOP_LAG_LOG_S is logged with where it is stuck; /livez fails beyond REGSOSEK_LOOP_LAG_LIMIT_S.
    loop_beat_s: float = Field(default=0.5, gt=0)
    loop_lag_log_s: float = Field(default=2.0, gt=0)
    loop_lag_limit_s: float = Field(default=10.0, gt=0)

    log_level: str = "INFO"
    # REGSOSEK_HTTP_MAX_BODY_BYTES: larger request bodies get 413 before they are read (regsosek.http_limits).
    # 8 MiB fits intake's largest batch (500 interviews) at ~16 KiB each; a typical family is 1.5-3 KiB,
    # a 40-member family with every answer ~30 KiB.
    http_max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)

    def dsn(self) -> str:
        return self.database_url or f"{self.pg_url_base}/{self.service_name}"

    @property
    def topic_prefix(self) -> str:
        """REGSOSEK_TOPIC_PREFIX, through the one rule (regsosek.topics.topic_prefix): isolates a test
        run's topics and groups on a shared broker."""
        from regsosek.topics import topic_prefix

        return topic_prefix()

    @property
    def consumer_group(self) -> str:
        from regsosek.topics import consumer_group

        return consumer_group(self.service_name)

    # Retention of the service's own rows (regsosek.retention, docs/RETENTION.md), pruned by a
    # background task every REGSOSEK_RETENTION_INTERVAL_S in deletes of at most
    # REGSOSEK_RETENTION_BATCH_ROWS rows each (short statements, no long locks).
    # The inbox must outlive every record the service may read again: see _inbox_outlives_topics.
    inbox_retention_days: int = Field(default=45, gt=0)
    # Rows the broker refused for good hold whole records (personal data): an operator has this long.
    outbox_rejected_retention_days: int = Field(default=30, gt=0)
    # Who read or decided what (ids only, regsosek.audit).
    audit_retention_days: int = Field(default=730, gt=0)
    retention_interval_s: float = Field(default=3600.0, gt=0)
    retention_batch_rows: int = Field(default=1000, gt=0)

    @model_validator(mode="after")
    def _inbox_outlives_topics(self) -> ServiceSettings:
        """A redelivered event is recognised only while its id is in the inbox. Records stay
        readable for their topic's retention (plus a segment), and the service re-reads them
        from the earliest after a consumer-group reset or when its committed offsets expire;
        an id pruned earlier would let the same event apply twice. So the inbox retention must
        exceed that window for every topic the service consumes (topics.yaml, this env's profile)."""
        from regsosek.topics import redelivery_window_ms

        profile = "production" if self.env == "production" else "local"
        window = redelivery_window_ms(self.service_name, profile)
        if window is None:
            return self
        if window < 0 or self.inbox_retention_days * 24 * 3600 * 1000 <= window:
            need = "topics kept forever" if window < 0 else f"more than {window / 86_400_000:g} days"
            raise ValueError(f"REGSOSEK_INBOX_RETENTION_DAYS={self.inbox_retention_days} too short for "
                             f"{self.service_name}: the topics it consumes can redeliver for {need} "
                             f"(retention.ms plus segment.ms in the {profile} profile of topics.yaml)")
        return self


class InsecureAuthConfig(InsecureSecret):
    """A production service without a proper token verification set-up (or with a shared secret)."""


class TokenSettings(ServiceSettings):
    """A service that verifies bearer tokens (intake, verify, notify): JWTs signed by an identity
    provider with an asymmetric key (regsosek.auth), checked against its JWK Set.

    Production (REGSOSEK_ENV=production) refuses to start without a JWKS source (https URL or
    file), the issuer and this service's audience, and with REGSOSEK_AUTH_SECRET set at all.
    Locally, without a JWKS source, the checkout's local key pair (.local/auth/jwks.json, made
    on first use; `make token` signs with it), the issuer `regsosek-local` and the audience
    `regsosek-<service>` are used."""

    # The identity provider's JWK Set: its jwks_uri (https in production), or a file (a mounted
    # ConfigMap); one of them, not both.
    auth_jwks_url: str = ""
    auth_jwks_file: str = ""
    auth_issuer: str = ""  # the `iss` every token must carry; local default regsosek-local
    auth_audience: str = ""  # the `aud` a token must name; default regsosek-<service>
    # Accepted JWS algorithms, comma separated; asymmetric only (HS* and none cannot be configured).
    auth_algorithms: str = ",".join(DEFAULT_ALGORITHMS)
    # exp - iat beyond this is refused (a long-lived token is a standing credential if it leaks).
    auth_max_token_lifetime_s: int = Field(default=12 * 3600, gt=0)
    auth_leeway_s: int = Field(default=30, ge=0, le=300)  # clock skew allowed on exp, iat, nbf
    auth_jwks_refresh_s: float = Field(default=300.0, gt=0)  # the key set is read again this often
    auth_jwks_min_refetch_s: float = Field(default=10.0, ge=0)  # an unknown kid fetches again at most this often
    auth_jwks_timeout_s: float = Field(default=5.0, gt=0)
    auth_jwks_max_bytes: int = Field(default=MAX_JWKS_BYTES, gt=0)
    # verified tokens remembered until they expire (regsosek.auth.TokenVerifier); 0 verifies every request
    auth_token_cache_size: int = Field(default=DEFAULT_TOKEN_CACHE_SIZE, ge=0)
    # HS256 shared secrets are not accepted anywhere any more. Kept only to refuse it in production,
    # where its presence means a deployment still hands every service a key that mints tokens.
    auth_secret: str = ""

    _verifier: TokenVerifier | None = PrivateAttr(default=None)

    @property
    def token_issuer(self) -> str:
        return self.auth_issuer.strip() or LOCAL_ISSUER

    @property
    def token_audience(self) -> str:
        return self.auth_audience.strip() or audience_of(self.service_name)

    def token_algorithms(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.auth_algorithms.split(",") if a.strip())

    @model_validator(mode="after")
    def _token_verification(self) -> TokenSettings:
        algorithms = self.token_algorithms()
        if not algorithms or (bad := [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]):
            raise InsecureAuthConfig(
                f"REGSOSEK_AUTH_ALGORITHMS may name only {', '.join(ASYMMETRIC_ALGORITHMS)}: a symmetric "
                f"algorithm (HS*) would let a public key be used as an HMAC secret, and none is no "
                f"signature; got {', '.join(bad) or 'nothing'}")
        if self.auth_jwks_url.strip() and self.auth_jwks_file.strip():
            raise InsecureAuthConfig("set REGSOSEK_AUTH_JWKS_URL or REGSOSEK_AUTH_JWKS_FILE, not both")
        if self.env.strip().lower() != "production":
            return self
        if self.auth_secret.strip():
            raise InsecureAuthConfig(
                "REGSOSEK_AUTH_SECRET is set: HS256 tokens with a shared secret are refused in production, "
                "because every service holding the secret could mint tokens for any role and area; "
                "remove it and verify the identity provider's tokens (REGSOSEK_AUTH_JWKS_URL, "
                "REGSOSEK_AUTH_ISSUER, REGSOSEK_AUTH_AUDIENCE)")
        missing = [name for name, v in (("REGSOSEK_AUTH_JWKS_URL (or REGSOSEK_AUTH_JWKS_FILE)",
                                         self.auth_jwks_url.strip() or self.auth_jwks_file.strip()),
                                        ("REGSOSEK_AUTH_ISSUER", self.auth_issuer.strip()),
                                        ("REGSOSEK_AUTH_AUDIENCE", self.auth_audience.strip())) if not v]
        if missing:
            raise InsecureAuthConfig(f"{', '.join(missing)} must be set in production: bearer tokens are "
                                     "verified against the identity provider's published keys")
        if self.auth_jwks_url.strip() and not self.auth_jwks_url.strip().lower().startswith("https://"):
            raise InsecureAuthConfig("REGSOSEK_AUTH_JWKS_URL must be an https URL in production "
                                     "(keys fetched in clear could be replaced on the way)")
        if self.auth_issuer.strip() == LOCAL_ISSUER:
            raise InsecureAuthConfig(f"REGSOSEK_AUTH_ISSUER {LOCAL_ISSUER} is the local key pair's; "
                                     "set the identity provider's issuer in production")
        return self

    def token_verifier(self) -> TokenVerifier:
        """The service's verifier, made on first use (locally, the local key pair too if missing)."""
        if self._verifier is None:
            keys: JwksSource
            if self.auth_jwks_url.strip():
                keys = JwksUrl(self.auth_jwks_url.strip(), timeout_s=self.auth_jwks_timeout_s,
                               refresh_s=self.auth_jwks_refresh_s, min_refetch_s=self.auth_jwks_min_refetch_s,
                               max_bytes=self.auth_jwks_max_bytes)
            else:
                keys = JwksFile(self.auth_jwks_file.strip() or local_jwks_file(), refresh_s=self.auth_jwks_refresh_s,
                                min_refetch_s=self.auth_jwks_min_refetch_s, max_bytes=self.auth_jwks_max_bytes)
            self._verifier = TokenVerifier(keys, issuer=self.token_issuer, audience=self.token_audience,
                                           algorithms=self.token_algorithms(),
                                           max_lifetime_s=self.auth_max_token_lifetime_s,
                                           leeway_s=self.auth_leeway_s, cache_size=self.auth_token_cache_size)
        return self._verifier
