"""The authenticated bus on a real broker: TLS + SASL/SCRAM-SHA-512 + ACLs (issue 11, item 7).

A private broker (tests/integration/securekafka.py: its own ports and folder, certificates made here
with openssl, SCRAM users written at format time, StandardAuthorizer denying whatever no ACL allows)
next to the shared PLAINTEXT stack, which is not touched. On it:

- verify runs as a real process with the secure settings (REGSOSEK_KAFKA_SECURITY_PROTOCOL=SASL_SSL,
  its user, the password from a file, the test CA) and exactly the ACLs deploy/kafka/users.yaml gives
  it: it consumes a roster and an interview and publishes the verification, and dead-letters a
  malformed record;
- a wrong password is refused at authentication;
- forged events are refused by the broker: a valid user without ACLs, and verify itself, writing
  `eligibility-decided` (classify's topic) get TopicAuthorizationFailed, and the topic stays empty;
  the user without ACLs cannot read verify's input (personal data) either.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError
from securekafka import Acl, SecureBroker, create_acls, make_certs

from regsosek.contracts import FamilyInterview, SlsRoster
from regsosek.kafka_security import KafkaClientSettings
from regsosek.messaging.relay import make_producer
from regsosek.topics import Topic, create_topics, specs

from itkit import (
    LOG_DIR,
    PG_BASE,
    ROOT,
    ServiceProcess,
    cloud_event,
    create_databases,
    drop_databases,
    eventually,
    family,
    family_id_of,
    free_port,
    header,
    new_sls_id,
    roster,
)

pytestmark = pytest.mark.integration

WAIT = 60
SERVICE = "verify"
USERS_FILE = ROOT / "deploy" / "kafka" / "users.yaml"


def deployed_acls(user: str) -> list[Acl]:
    """The ACLs deploy/kafka/users.yaml gives `user`, as the broker's ACL bindings."""
    docs = [d for d in yaml.safe_load_all(USERS_FILE.read_text()) if d and d.get("kind") == "KafkaUser"]
    (spec,) = [d["spec"] for d in docs if d["metadata"]["name"] == user]
    out = []
    for rule in spec["authorization"]["acls"]:
        r = rule["resource"]
        pattern = {"literal": "literal", "prefix": "prefixed"}[r.get("patternType", "literal")]
        out += [Acl(f"User:{user}", r["type"], r["name"], op.lower(), pattern) for op in rule["operations"]]
    return out


class Bus:
    def __init__(self, broker: SecureBroker, folder: Path) -> None:
        self.broker, self.folder = broker, folder

    def settings(self, user: str, password: str | None = None) -> KafkaClientSettings:
        return KafkaClientSettings(kafka_bootstrap=self.broker.bootstrap, kafka_security_protocol="SASL_SSL",
                                   kafka_sasl_username=user,
                                   kafka_sasl_password=password or self.broker.users[user],
                                   kafka_ssl_ca_file=str(self.broker.certs.ca))

    def password_file(self, user: str) -> Path:
        p = self.folder / f"{user}.password"
        p.write_text(self.broker.users[user] + "\n")
        p.chmod(0o600)
        return p

    async def read(self, topic: str) -> list:
        """Every record of `topic` so far, as the admin."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap, group_id=None, enable_auto_commit=False,
                                    **self.settings("admin").kafka_client_options())
        await consumer.start()
        try:
            (spec,) = [s for s in specs("local") if s.name == topic]  # as create_topics made it
            tps = [TopicPartition(topic, p) for p in range(spec.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out = []
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                for recs in (await consumer.getmany(*tps, timeout_ms=500)).values():
                    out.extend(recs)
            return out
        finally:
            await consumer.stop()


@pytest.fixture(scope="module")
async def bus(stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("secure-bus")
    certs = await asyncio.to_thread(make_certs, folder / "tls")
    users = {name: secrets.token_urlsafe(24) for name in ("admin", SERVICE, "intruder")}
    broker = SecureBroker(certs, users)
    await asyncio.to_thread(broker.start)
    try:
        b = Bus(broker, folder)
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, **b.settings("admin").kafka_client_options())
        await admin.start()
        try:
            # the topic admin of regsosek.topics, over TLS + SCRAM as the admin user
            created = await create_topics(broker.bootstrap, prefix="", security=b.settings("admin"))
            assert set(created) == {t.value for t in Topic}
            await create_acls(admin, deployed_acls(SERVICE))
        finally:
            await admin.close()
        yield b
    finally:
        await asyncio.to_thread(broker.stop)


@pytest.fixture(scope="module")
async def verify(bus):
    database = f"sec{uuid.uuid4().hex[:8]}_verify"
    await create_databases([database])
    port = free_port()
    env = {
        "REGSOSEK_KAFKA_BOOTSTRAP": bus.broker.bootstrap,
        "REGSOSEK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "REGSOSEK_KAFKA_SASL_USERNAME": SERVICE,
        "REGSOSEK_KAFKA_SASL_PASSWORD_FILE": str(bus.password_file(SERVICE)),
        "REGSOSEK_KAFKA_SSL_CA_FILE": str(bus.broker.certs.ca),
        "REGSOSEK_DATABASE_URL": f"{PG_BASE}/{database}",
        "REGSOSEK_TOPIC_PREFIX": "",  # its own broker: the deployed names, groups and ACLs
        "REGSOSEK_HTTP_HOST": "127.0.0.1",
        "REGSOSEK_HTTP_PORT": str(port),
    }
    proc = ServiceProcess(SERVICE, env, port, LOG_DIR / f"{bus.broker.tag}-{SERVICE}.log").start()
    try:
        await proc.wait_ready(WAIT)
        yield proc
    finally:
        await proc.stop()
        await drop_databases([database])


async def test_service_consumes_and_publishes_with_only_its_acls(bus, verify):
    entry, doc = family(new_sls_id(), 1)
    sls = doc["location"]["sls_id"]
    fid = family_id_of(doc)
    producer = make_producer(bus.broker.bootstrap, bus.settings("admin"), linger_ms=0)  # standing in for intake
    await producer.start()
    try:
        r = SlsRoster.model_validate(roster(sls, [entry]))
        _, value, headers = cloud_event(r, subject=sls)
        await producer.send_and_wait(Topic.SLS_ROSTER.value, value=value, key=sls.encode(), headers=headers)
        iv = FamilyInterview.model_validate(doc)
        _, value, headers = cloud_event(iv, subject=fid)
        await producer.send_and_wait(Topic.INTERVIEW_SUBMITTED.value, value=value, key=sls.encode(), headers=headers)
        await producer.send_and_wait(Topic.INTERVIEW_SUBMITTED.value, value=b"not json", key=sls.encode(),
                                     headers=[("ce_id", b"forged-1")])
    finally:
        await producer.stop()

    async def verified():
        return [x for x in await bus.read(Topic.INTERVIEW_VERIFIED.value) if header(x, "ce_subject") == fid]

    got = await eventually(verified, timeout=WAIT, what="verify to publish the verification over TLS + SCRAM")
    assert len(got) == 1

    async def dead_lettered():
        return [x for x in await bus.read(Topic.DEAD_LETTER.value) if header(x, "dlq_service") == SERVICE]

    dl = await eventually(dead_lettered, timeout=WAIT, what="verify to dead-letter the malformed record")
    assert dl[0].value == b"not json" and header(dl[0], "dlq_topic") == Topic.INTERVIEW_SUBMITTED.value
    assert verify.alive


async def test_a_wrong_password_is_refused(bus):
    bad = bus.settings(SERVICE, password="not-" + bus.broker.users[SERVICE])
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.broker.bootstrap, request_timeout_ms=10_000,
                                **bad.kafka_client_options())
    with pytest.raises(KafkaConnectionError):
        await admin.start()  # aiokafka reports a bootstrap failure; the broker says why
    await admin.close()
    log = bus.broker.server_log.read_text(errors="replace")
    assert "Failed authentication with /127.0.0.1" in log and "invalid credentials" in log, bus.broker.log_tail()


async def _forge(settings: KafkaClientSettings, topic: str) -> BaseException | None:
    # Not idempotent: a user without any Write ACL may not even get a producer id.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", request_timeout_ms=10_000,
                                **settings.kafka_client_options())
    await producer.start()
    try:
        sls = new_sls_id()  # any well-formed event: the broker refuses by principal and topic, not content
        _, value, headers = cloud_event(SlsRoster.model_validate(roster(sls, [family(sls, 1)[0]])), subject=sls)
        await asyncio.wait_for(producer.send_and_wait(topic, value=value, key=sls.encode(), headers=headers), 30)
    except KafkaError as e:
        return e
    finally:
        await producer.stop()
    return None


async def test_forged_events_are_refused_by_the_broker(bus, verify):
    decided = Topic.ELIGIBILITY_DECIDED.value
    # an authenticated user with no ACL at all
    err = await _forge(bus.settings("intruder"), decided)
    assert isinstance(err, TopicAuthorizationFailedError), repr(err)
    # a service writing a topic it does not produce (only classify decides eligibility)
    err = await _forge(bus.settings(SERVICE), decided)
    assert isinstance(err, TopicAuthorizationFailedError), repr(err)
    # nor can it feed itself forged input (intake's topic)
    err = await _forge(bus.settings(SERVICE), Topic.INTERVIEW_SUBMITTED.value)
    assert isinstance(err, TopicAuthorizationFailedError), repr(err)
    assert await bus.read(decided) == [], "a forged eligibility decision reached the topic"

    # and the user without ACLs cannot even see the interviews' topic (personal data), let alone read it
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.broker.bootstrap, request_timeout_ms=10_000,
                                **bus.settings("intruder").kafka_client_options())
    await admin.start()
    try:
        assert Topic.INTERVIEW_SUBMITTED.value not in await admin.list_topics()
        (described,) = await admin.describe_topics([Topic.INTERVIEW_SUBMITTED.value])
        assert described["error_code"] == TopicAuthorizationFailedError.errno, described
    finally:
        await admin.close()
    assert verify.alive
