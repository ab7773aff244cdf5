"""Kafka client options from settings: PLAINTEXT by default, TLS + SCRAM when configured, never in clear in production."""

from __future__ import annotations

import ssl

import pytest
from faststream.kafka.security import parse_security

from regsosek.kafka_security import InsecureKafkaSettings, KafkaClientSettings, check_production, client_options
from regsosek.messaging.relay import make_producer
from regsosek.settings import ServiceSettings

PASSWORD = "s3cret-Scram-pa55word-for-tests"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for var in [v for v in os.environ if v.startswith("REGSOSEK_KAFKA_") or v == "REGSOSEK_ENV"]:
        monkeypatch.delenv(var)


def sasl(**kw) -> KafkaClientSettings:
    return KafkaClientSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="verify",
                               kafka_sasl_password=PASSWORD, **kw)


def test_default_is_todays_plaintext():
    s = ServiceSettings()
    assert s.kafka_client_options() == {"security_protocol": "PLAINTEXT"}
    assert s.kafka_faststream_security() is None
    assert client_options() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_options_verify_the_broker():
    opts = sasl().kafka_client_options()
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "verify" and opts["sasl_plain_password"] == PASSWORD
    ctx = opts["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED


def test_faststream_broker_gets_the_same_security():
    parsed = parse_security(sasl().kafka_faststream_security())
    assert parsed["security_protocol"] == "SASL_SSL" and parsed["sasl_mechanism"] == "SCRAM-SHA-512"
    assert parsed["sasl_plain_username"] == "verify" and parsed["sasl_plain_password"] == PASSWORD
    assert parsed["ssl_context"].check_hostname
    tls_only = parse_security(KafkaClientSettings(kafka_security_protocol="SSL").kafka_faststream_security())
    assert tls_only["security_protocol"] == "SSL" and tls_only["ssl_context"] is not None


async def test_the_relay_producer_takes_the_settings():
    producer = make_producer("127.0.0.1:1", sasl())  # not started: nothing connects
    client = producer.client
    assert client._security_protocol == "SASL_SSL" and client._sasl_mechanism == "SCRAM-SHA-512"
    assert client._ssl_context.check_hostname


def test_password_from_a_mounted_file(tmp_path):
    f = tmp_path / "password"
    f.write_text(PASSWORD + "\n")
    s = KafkaClientSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="verify",
                            kafka_sasl_password_file=str(f))
    assert s.kafka_client_options()["sasl_plain_password"] == PASSWORD


def test_environment_variables(monkeypatch, tmp_path):
    f = tmp_path / "pw"
    f.write_text(PASSWORD)
    monkeypatch.setenv("REGSOSEK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("REGSOSEK_KAFKA_SASL_USERNAME", "classify")
    monkeypatch.setenv("REGSOSEK_KAFKA_SASL_PASSWORD_FILE", str(f))
    opts = client_options()
    assert opts["sasl_plain_username"] == "classify" and opts["sasl_plain_password"] == PASSWORD


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_production_refuses_kafka_in_clear(protocol):
    extra = {"kafka_sasl_username": "u", "kafka_sasl_password": PASSWORD} if protocol.startswith("SASL") else {}
    s = ServiceSettings(env="production", kafka_security_protocol=protocol, kafka_bootstrap="kafka-0.kafka:9093",
                        **extra)
    for attempt in (lambda: check_production(s), s.kafka_client_options, s.kafka_faststream_security):
        with pytest.raises(InsecureKafkaSettings) as e:
            attempt()
        assert str(e.value).startswith(f"REGSOSEK_KAFKA_SECURITY_PROTOCOL={protocol} is refused in production")
        assert PASSWORD not in str(e.value)


@pytest.mark.parametrize("bootstrap,refused", [
    ("127.0.0.1:19092", False), ("localhost:9092,127.0.0.2:9092", False), ("[::1]:9092", False),
    ("127.0.0.1:9092,10.0.0.5:9092", True), ("kafka:9092", True), ("", True),
])
def test_production_allows_cleartext_only_to_loopback(bootstrap, refused):
    s = ServiceSettings(env="production", kafka_bootstrap=bootstrap)
    if refused:
        with pytest.raises(InsecureKafkaSettings):
            check_production(s)
    else:
        check_production(s)


def test_production_refuses_tls_without_client_authentication():
    s = ServiceSettings(env="production", kafka_security_protocol="SSL", kafka_bootstrap="kafka-0.kafka:9093")
    with pytest.raises(InsecureKafkaSettings, match="REGSOSEK_KAFKA_SSL_CERT_FILE"):
        check_production(s)


def test_production_accepts_sasl_ssl():
    check_production(sasl(env="production"))


@pytest.mark.parametrize("kw,needle", [
    ({"kafka_security_protocol": "SASL_SSL"}, "REGSOSEK_KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "REGSOSEK_KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u", "kafka_sasl_password_file": "/nonexistent"},
     "REGSOSEK_KAFKA_SASL_PASSWORD_FILE"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "/nonexistent"}, "REGSOSEK_KAFKA_SSL_KEY_FILE"),
    ({"kafka_ssl_ca_file": "/etc/hostname"}, "uses no TLS"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_file": "/nonexistent"}, "REGSOSEK_KAFKA_SSL_CA_FILE"),
])
def test_incomplete_settings_are_refused_by_name(kw, needle):
    with pytest.raises(InsecureKafkaSettings) as e:
        KafkaClientSettings(**kw)
    assert needle in str(e.value)


def test_the_password_never_shows():
    s = sasl()
    assert PASSWORD not in repr(s) and PASSWORD not in str(s) and PASSWORD not in s.kafka_description()
    with pytest.raises(Exception) as e:
        KafkaClientSettings(kafka_security_protocol="NOPE", kafka_sasl_password=PASSWORD)
    assert PASSWORD not in str(e.value)


def test_a_cluster_bootstrap_list_is_split_into_hosts() -> None:
    s = ServiceSettings(kafka_bootstrap="127.0.0.1:19092, 127.0.0.1:19192,127.0.0.1:19292")
    assert s.kafka_bootstrap_servers == ["127.0.0.1:19092", "127.0.0.1:19192", "127.0.0.1:19292"]
    assert ServiceSettings(kafka_bootstrap="kafka:9092").kafka_bootstrap_servers == ["kafka:9092"]
