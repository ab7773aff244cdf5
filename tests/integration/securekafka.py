"""A second, private Kafka broker with TLS, SASL/SCRAM-SHA-512 and ACLs, for tests/integration/test_secure_bus.py.

The shared PLAINTEXT broker of scripts/kafka.sh stays as it is; this one runs from the same jars
(`scripts/kafka.sh runtime` installs them on a fresh machine and names java and the jar folder) with
its own ports and folder under .local/kafka-secure/<tag>/, and is always stopped by its owner.

- Certificates: a throw-away CA and one broker certificate (CN=broker, SAN 127.0.0.1/localhost)
  made with openssl in the test's temporary folder.
- Listeners: SASL_SSL for clients (SCRAM-SHA-512 only); the KRaft controller listener is SSL with
  client certificates required, so only the broker itself (principal `User:CN=broker`) reaches it.
- Authorisation: KRaft's StandardAuthorizer, `allow.everyone.if.no.acl.found=false`, super users
  `User:admin` and `User:CN=broker`; everyone else only gets what an ACL grants.
- SCRAM users are written into the metadata at format time (`StorageTool format --add-scram`).
- ACLs: aiokafka's admin client has no call for them, so `create_acls` sends Kafka's CreateAcls
  request (API 30) through it as the admin user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Kafka's wire codes (org.apache.kafka.common.resource / acl).
RESOURCE = {"topic": 2, "group": 3, "cluster": 4}
PATTERN = {"literal": 3, "prefixed": 4}
OPERATION = {"read": 3, "write": 4, "create": 5, "describe": 8, "idempotent_write": 12}
ALLOW = 3


@dataclass(frozen=True)
class Certs:
    folder: Path
    ca: Path  # PEM, what clients trust
    keystore: Path  # PKCS12: the broker's key and certificate
    keystore_password: str


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"openssl {args[0]} failed: {proc.stderr[-2000:]}"


def make_certs(folder: Path) -> Certs:
    """A CA and a broker certificate for 127.0.0.1 / localhost, with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broker.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=regsosek-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", "/CN=broker", cwd=folder)
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.pem", "-days", "2", "-extfile", "broker.ext", cwd=folder)
    password = secrets.token_hex(16)
    _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
             "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{password}", cwd=folder)
    return Certs(folder, folder / "ca.pem", folder / "broker.p12", password)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SecureBroker:
    certs: Certs
    users: dict[str, str]  # SCRAM-SHA-512 user -> password; must include "admin"
    tag: str = field(default_factory=lambda: f"sec{secrets.token_hex(4)}")
    port: int = field(default_factory=_free_port)
    controller_port: int = field(default_factory=_free_port)
    start_timeout_s: float = 90.0
    proc: subprocess.Popen | None = None

    @property
    def folder(self) -> Path:
        return ROOT / ".local" / "kafka-secure" / self.tag

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def server_log(self) -> Path:
        return self.folder / "logs" / "server.log"

    def properties(self) -> str:
        c, admin = self.certs, self.users["admin"]
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=SASL_SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{self.port}",
            "inter.broker.listener.name=SASL_SSL",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL",
            # clients: SCRAM-SHA-512 over TLS only
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="{admin}";',
            # TLS: the broker's own key; clients and the controller channel trust the test CA
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={c.keystore}",
            f"ssl.keystore.password={c.keystore_password}",
            f"ssl.key.password={c.keystore_password}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={c.ca}",
            # the controller listener takes only clients with a certificate of the CA (the broker itself)
            "listener.name.controller.ssl.client.auth=required",
            # authorisation: deny unless an ACL allows
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            "super.users=User:admin;User:CN=broker",
            # storage and a single node's internal topics
            f"log.dirs={self.folder / 'data'}",
            "num.partitions=3",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=3",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=2",
            "num.io.threads=2",
            "",
        ])

    def _runtime(self) -> tuple[str, str]:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "kafka.sh"), "runtime"], capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"scripts/kafka.sh runtime failed:\n{proc.stderr[-3000:]}"
        java, libs = proc.stdout.strip().splitlines()[-2:]
        return java, libs

    def start(self) -> None:
        java, libs = self._runtime()
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "logs").mkdir(parents=True)
        props = self.folder / "server.properties"
        props.write_text(self.properties())
        props.chmod(0o600)  # holds the keystore and admin passwords
        log4j = ROOT / "scripts" / "kafka" / "log4j2.xml"
        jvm = [java, f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.folder / 'logs'}", "-cp",
               f"{libs}/*"]
        scram = [a for user, pw in self.users.items()
                 for a in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={pw}]")]
        fmt = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props),
                              *scram], capture_output=True, text=True, timeout=120)
        assert fmt.returncode == 0, f"StorageTool format failed:\n{fmt.stdout[-2000:]}\n{fmt.stderr[-2000:]}"
        with open(self.folder / "logs" / "kafka.out", "wb") as out:
            self.proc = subprocess.Popen([*jvm[:1], "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                                          *jvm[1:], "kafka.Kafka", str(props)],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the secure broker exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self.server_log.exists() and "Kafka Server started" in self.server_log.read_text(errors="replace"):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the secure broker did not start in {self.start_timeout_s:.0f}s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, n: int = 40) -> str:
        parts = []
        for p in (self.server_log, self.folder / "logs" / "kafka.out"):
            if p.exists():
                parts.append(f"--- {p.relative_to(ROOT)}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-n:]))
        return "\n".join(parts)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, SIGKILL after `timeout_s`; then removes the folder (data, passwords) unless KEEP is asked."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if not os.environ.get("REGSOSEK_KEEP_SECURE_BROKER"):
            shutil.rmtree(self.folder, ignore_errors=True)


def _cluster_id() -> str:
    import base64
    import uuid

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass(frozen=True)
class Acl:
    principal: str  # e.g. "User:verify"
    resource: str  # topic | group | cluster
    name: str
    operation: str  # read | write | describe | ...
    pattern: str = "literal"  # literal | prefixed


async def create_acls(admin, acls: list[Acl], timeout_s: float = 15.0) -> None:
    """Creates `acls` (ALLOW, any host) through an aiokafka admin client connected as a super user."""
    from aiokafka.errors import for_code
    from aiokafka.protocol.admin import CreateAclsRequest

    for a in acls:
        request = CreateAclsRequest(RESOURCE[a.resource], a.name, PATTERN[a.pattern], a.principal, "*",
                                    OPERATION[a.operation], ALLOW)
        response = await asyncio.wait_for(admin._send_request(request), timeout_s)
        for error_code, message in response.creation_responses:
            if error_code:
                raise for_code(error_code)(f"create ACL {a}: {message}")


@contextlib.contextmanager
def running(broker: SecureBroker):
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
