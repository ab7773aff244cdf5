"""How every Kafka client of the project connects: TLS and SASL/SCRAM from settings, in one place.

The services' consumer (FastStream `KafkaBroker`), the outbox relay's producer, the topic admin,
the operator commands (`regsosek.deadletters`, classify's re-rank and replay), the tools and the
integration test kit all take their connection options from here, so an authenticated bus is a
matter of environment, not of code:

| variable (prefix `REGSOSEK_`) | default | meaning |
|---|---|---|
| `KAFKA_SECURITY_PROTOCOL` | `PLAINTEXT` | `PLAINTEXT`, `SSL`, `SASL_SSL` or `SASL_PLAINTEXT` |
| `KAFKA_SASL_MECHANISM` | `SCRAM-SHA-512` | `SCRAM-SHA-512` or `SCRAM-SHA-256` (SASL_* only) |
| `KAFKA_SASL_USERNAME` | empty | the client's Kafka user (SASL_* only) |
| `KAFKA_SASL_PASSWORD` | empty | its password; or `KAFKA_SASL_PASSWORD_FILE`, a mounted secret file (wins when both are set) |
| `KAFKA_SSL_CA_FILE` | empty | PEM CA bundle the broker's certificate must chain to (empty: the system's trust store) |
| `KAFKA_SSL_CERT_FILE`, `KAFKA_SSL_KEY_FILE` | empty | client certificate and key for mutual TLS (both or neither) |

With `REGSOSEK_ENV=production`, `PLAINTEXT` and `SASL_PLAINTEXT` are refused at start-up (the error
names the setting): events carry personal data and a bus without TLS lets anyone on the network read
them or forge them. The one exception is a bootstrap made only of loopback addresses (a TLS-terminating
sidecar on the same host; also what lets the tests run a production-configured service on the local
broker): that traffic never crosses a network. The broker's host name is always checked against its certificate.

Secrets are never logged: the password is a `SecretStr`, errors name settings, never values.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]

# Protocols that send events in clear over the network.
CLEARTEXT = frozenset({"PLAINTEXT", "SASL_PLAINTEXT"})


class InsecureKafkaSettings(RuntimeError):
    """The Kafka connection settings are incomplete, or unsafe for production.

    Not a ValueError on purpose: pydantic would wrap it into a ValidationError repeating the input."""


class KafkaClientSettings(BaseSettings):
    """The Kafka connection part of the settings (`ServiceSettings` inherits it; tools and commands
    that have no service settings instantiate it alone: `KafkaClientSettings()` reads the environment)."""

    model_config = SettingsConfigDict(env_prefix="REGSOSEK_", extra="ignore", hide_input_in_errors=True)

    env: str = "local"
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_sasl_password_file: str = ""
    kafka_ssl_ca_file: str = ""
    kafka_ssl_cert_file: str = ""
    kafka_ssl_key_file: str = ""

    @model_validator(mode="after")
    def _check_kafka_security(self) -> KafkaClientSettings:
        check_complete(self)
        return self

    # ------------------------------------------------------------ what the clients get

    @property
    def kafka_uses_ssl(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    def kafka_sasl_secret(self) -> str:
        """The SASL password: the file's content (trailing newline dropped) when a file is set."""
        if self.kafka_sasl_password_file:
            try:
                return Path(self.kafka_sasl_password_file).read_text().rstrip("\r\n")
            except OSError as e:
                raise InsecureKafkaSettings(
                    f"REGSOSEK_KAFKA_SASL_PASSWORD_FILE cannot be read ({type(e).__name__})") from None
        return self.kafka_sasl_password.get_secret_value()

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context (server certificate and host name verified), or None without TLS."""
        if not self.kafka_uses_ssl:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.kafka_ssl_ca_file or None)
        except (OSError, ssl.SSLError) as e:
            raise InsecureKafkaSettings(
                f"REGSOSEK_KAFKA_SSL_CA_FILE cannot be loaded as a PEM CA bundle ({type(e).__name__})") from None
        if self.kafka_ssl_cert_file:
            try:
                ctx.load_cert_chain(self.kafka_ssl_cert_file, self.kafka_ssl_key_file or None)
            except (OSError, ssl.SSLError) as e:
                raise InsecureKafkaSettings("REGSOSEK_KAFKA_SSL_CERT_FILE / REGSOSEK_KAFKA_SSL_KEY_FILE cannot be "
                                            f"loaded as a certificate and its key ({type(e).__name__})") from None
        return ctx

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        check_production(self)
        opts: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        ctx = self.kafka_ssl_context()
        if ctx is not None:
            opts["ssl_context"] = ctx
        if self.kafka_uses_sasl:
            opts.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                        sasl_plain_password=self.kafka_sasl_secret())
        return opts

    def kafka_faststream_security(self) -> Any:
        """The `security=` object for FastStream's KafkaBroker (None for PLAINTEXT)."""
        from faststream.security import BaseSecurity, SASLScram256, SASLScram512

        check_production(self)
        if self.kafka_security_protocol == "PLAINTEXT":
            return None
        ctx = self.kafka_ssl_context()
        if not self.kafka_uses_sasl:
            return BaseSecurity(ssl_context=ctx, use_ssl=True)
        cls = SASLScram512 if self.kafka_sasl_mechanism == "SCRAM-SHA-512" else SASLScram256
        return cls(self.kafka_sasl_username, self.kafka_sasl_secret(), ssl_context=ctx, use_ssl=self.kafka_uses_ssl)

    @property
    def kafka_bootstrap_servers(self) -> list[str]:
        """REGSOSEK_KAFKA_BOOTSTRAP as a list ("host:port,host:port" on a cluster): FastStream takes a
        single string as one host, so clients that are not plain aiokafka get the list."""
        return [h.strip() for h in self.kafka_bootstrap.split(",") if h.strip()]

    def kafka_description(self) -> str:
        """For logs and error messages: protocol and user, never the password."""
        who = f" as {self.kafka_sasl_username}" if self.kafka_uses_sasl else ""
        return f"{self.kafka_bootstrap} ({self.kafka_security_protocol}{who})"


def check_production(s: KafkaClientSettings) -> None:
    """Raises InsecureKafkaSettings naming the setting when `REGSOSEK_ENV=production` and the protocol
    sends events in clear. Every client builder calls it, and a service calls it first thing at start-up
    (it is not a settings validator so that settings for other purposes, e.g. a unit test of another
    production rule, can still be built)."""
    protocol = s.kafka_security_protocol
    if s.env.strip().lower() == "production" and protocol in CLEARTEXT and not _loopback_only(s.kafka_bootstrap):
        raise InsecureKafkaSettings(
            f"REGSOSEK_KAFKA_SECURITY_PROTOCOL={protocol} is refused in production (events would cross the network "
            "unencrypted); use SASL_SSL (or SSL with a client certificate) and set REGSOSEK_KAFKA_SSL_CA_FILE")
    if s.env.strip().lower() == "production" and protocol == "SSL" and not s.kafka_ssl_cert_file:
        raise InsecureKafkaSettings(
            "REGSOSEK_KAFKA_SECURITY_PROTOCOL=SSL without REGSOSEK_KAFKA_SSL_CERT_FILE is refused in production "
            "(the broker could not tell which service is connecting); use SASL_SSL or a client certificate")


def _loopback_only(bootstrap: str) -> bool:
    """Every bootstrap address is on this host (127.0.0.0/8, ::1, localhost): the traffic never crosses a
    network, e.g. a TLS-terminating sidecar proxy next to the service, so cleartext is no exposure.
    (The brokers' advertised addresses then must be loopback too; the proxy's side is the one to secure.)"""
    import ipaddress

    hosts = []
    for part in bootstrap.split(","):
        part = part.strip()
        if not part:
            continue
        host = part[1:part.index("]")] if part.startswith("[") else part.rsplit(":", 1)[0]
        hosts.append(host)
    if not hosts:
        return False
    for host in hosts:
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


def check_complete(s: KafkaClientSettings) -> None:
    """Raises InsecureKafkaSettings naming the setting when the Kafka settings are incomplete or inconsistent."""
    protocol = s.kafka_security_protocol
    if protocol.startswith("SASL_"):
        if not s.kafka_sasl_username:
            raise InsecureKafkaSettings(f"REGSOSEK_KAFKA_SASL_USERNAME must be set with "
                                        f"REGSOSEK_KAFKA_SECURITY_PROTOCOL={protocol}")
        if not s.kafka_sasl_password_file and not s.kafka_sasl_password.get_secret_value():
            raise InsecureKafkaSettings(f"REGSOSEK_KAFKA_SASL_PASSWORD or REGSOSEK_KAFKA_SASL_PASSWORD_FILE must be "
                                        f"set with REGSOSEK_KAFKA_SECURITY_PROTOCOL={protocol}")
        if s.kafka_sasl_password_file and not Path(s.kafka_sasl_password_file).is_file():
            raise InsecureKafkaSettings("REGSOSEK_KAFKA_SASL_PASSWORD_FILE names no readable file")
    if bool(s.kafka_ssl_cert_file) != bool(s.kafka_ssl_key_file):
        raise InsecureKafkaSettings("REGSOSEK_KAFKA_SSL_CERT_FILE and REGSOSEK_KAFKA_SSL_KEY_FILE go together")
    for name, value in (("REGSOSEK_KAFKA_SSL_CA_FILE", s.kafka_ssl_ca_file),
                        ("REGSOSEK_KAFKA_SSL_CERT_FILE", s.kafka_ssl_cert_file),
                        ("REGSOSEK_KAFKA_SSL_KEY_FILE", s.kafka_ssl_key_file)):
        if value and protocol not in ("SSL", "SASL_SSL"):
            raise InsecureKafkaSettings(f"{name} is set but REGSOSEK_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS")
        if value and not Path(value).is_file():
            raise InsecureKafkaSettings(f"{name} names no readable file")


def client_options(settings: KafkaClientSettings | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments from `settings`, or from the environment (REGSOSEK_KAFKA_*)."""
    return (settings or KafkaClientSettings()).kafka_client_options()
