"""docker-compose.yml and deploy/ stay consistent with the schema, the pinned
versions and the topic registry.

No Docker and no cluster needed: these read the files only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from compose_services import SERVICES, http_port, mints_local_tokens, settings_class, verifies_tokens
from jsonschema import Draft7Validator

from regsosek.settings import ServiceSettings
from regsosek.topics import consumed_by, render_strimzi, specs

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "vendor" / "compose-spec" / "compose-spec.json"
VERSIONS_ENV = ROOT / "scripts" / "versions.env"
DEPLOY = ROOT / "deploy"
STRIMZI_TOPICS = DEPLOY / "kafka" / "topics.yaml"

IMAGES_ENV = DEPLOY / "images.env"
# The services, their ports and whether they verify bearer tokens come from the code
# (compose_services: the topic registry and each service's settings class), and so do consumer
# groups and consumed topics (test_each_service_scales_on_its_consumer_group_lag).
REGENERATE = (
    "python -m regsosek.topics render-strimzi --profile production --namespace regsosek > deploy/kafka/topics.yaml"
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def versions() -> dict[str, str]:
    if not VERSIONS_ENV.is_file():
        pytest.fail(f"{VERSIONS_ENV.relative_to(ROOT)} is missing: it pins KAFKA_VERSION for every way of running Kafka")
    out = {}
    for line in VERSIONS_ENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip("'\"")
    if "KAFKA_VERSION" not in out:
        pytest.fail(f"{VERSIONS_ENV.relative_to(ROOT)} has no KAFKA_VERSION=... line")
    return out


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _regsosek_services(compose: dict) -> dict[str, dict]:
    """Compose services that run one of the services' console scripts, by service name."""
    found = {}
    for svc in compose["services"].values():
        cmd = _command(svc)
        m = re.fullmatch(r"regsosek-(\w+)", cmd[0]) if cmd else None
        if m and m.group(1) in SERVICES:
            found[m.group(1)] = svc
    return found


def _deploy_docs() -> list[dict]:
    docs = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path == DEPLOY / "otel-collector.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _deploy_docs() if d.get("kind") == kind}


def _bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    assert m, f"unreadable quantity {quantity!r}"
    return float(m.group(1)) * units.get(m.group(2), 1)


# --- docker-compose.yml -----------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec(compose):
    schema = json.loads(SCHEMA_FILE.read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    report = "\n".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)
    assert not errors, f"docker-compose.yml breaks the Compose Specification:\n{report}"


def test_kafka_image_default_is_the_pinned_version(compose, versions):
    image = compose["services"]["kafka"]["image"]
    m = re.fullmatch(r"apache/kafka:\$\{KAFKA_VERSION:-([^}]+)\}\$\{KAFKA_IMAGE_DIGEST:-\}", image)
    assert m, f"kafka image must be apache/kafka:${{KAFKA_VERSION:-<version>}}${{KAFKA_IMAGE_DIGEST:-}}, got {image!r}"
    assert m.group(1) == versions["KAFKA_VERSION"], (
        f"docker-compose.yml defaults Kafka to {m.group(1)} but scripts/versions.env pins {versions['KAFKA_VERSION']}"
    )


def test_kafka_is_a_single_kraft_node_that_creates_no_topics(compose):
    env = _environment(compose["services"]["kafka"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert "healthcheck" in compose["services"]["kafka"]


def test_topic_init_creates_the_registry_topics_once_kafka_is_healthy(compose):
    svc = compose["services"]["topic-init"]
    assert _command(svc) == [
        "python", "-m", "regsosek.topics", "create", "--bootstrap", "kafka:9092", "--profile", "local",
    ]
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert svc["image"] == compose["services"]["intake"]["image"], "topic-init must run the app image"


def test_every_service_uses_its_own_database(compose):
    running = _regsosek_services(compose)
    assert set(running) == set(SERVICES), f"compose runs {sorted(running)}, expected {sorted(SERVICES)}"
    created = set(re.findall(r"CREATE DATABASE (\w+)", (DEPLOY / "postgres" / "init.sql").read_text(), re.I))
    for name, svc in running.items():
        url = _environment(svc).get("REGSOSEK_DATABASE_URL")
        assert url, f"{name} has no REGSOSEK_DATABASE_URL"
        parts = urlsplit(url)
        assert parts.scheme in ("postgresql", "postgres"), url
        assert parts.hostname == "postgres", url
        assert parts.path == f"/{name}", f"{name} must use database {name!r}, not {parts.path.lstrip('/')!r}"
        assert parts.username == name, f"{name} must log in as its own role, not {parts.username!r}"
        assert name in created, f"deploy/postgres/init.sql does not create database {name}"


def test_every_service_is_wired_the_same_way(compose):
    for name, svc in _regsosek_services(compose).items():
        port, needs_auth = http_port(name), verifies_tokens(name)
        env = _environment(svc)
        assert env["REGSOSEK_HTTP_PORT"] == str(port), name
        assert env["REGSOSEK_HTTP_HOST"] == "0.0.0.0", name
        assert env["REGSOSEK_KAFKA_BOOTSTRAP"] == "kafka:9092", name
        assert env["REGSOSEK_ENV"] == "local", name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318", name
        assert env["OTEL_SERVICE_NAME"] == f"regsosek-{name}", name
        # no shared token secret anywhere: tokens are verified against public keys only
        assert "REGSOSEK_AUTH_SECRET" not in env, name
        assert ("REGSOSEK_AUTH_JWKS_FILE" in env) == needs_auth, name
        if needs_auth and not mints_local_tokens(name):  # the local key pair's public half, never its private key
            (mount,) = [v for v in svc.get("volumes", []) if isinstance(v, dict) and "auth" in v.get("target", "")]
            assert mount["source"] == "./.local/auth/jwks.json" and mount["read_only"] is True, name
            assert mount["target"] == env["REGSOSEK_AUTH_JWKS_FILE"], name
            assert mount["bind"]["create_host_path"] is False, name
        elif needs_auth:  # signs local sign-ins: the whole key folder, where the code looks for it
            (mount,) = [v for v in svc.get("volumes", []) if isinstance(v, dict) and "auth" in v.get("target", "")]
            assert mount["source"] == "./.local/auth" and mount["bind"]["create_host_path"] is False, name
            assert env["REGSOSEK_LOCAL_AUTH_DIR"] == mount["target"], name
            assert env["REGSOSEK_AUTH_JWKS_FILE"] == f"{mount['target']}/jwks.json", name
        assert f"127.0.0.1:{port}/healthz" in " ".join(_command({"command": svc["healthcheck"]["test"]})), name
        conditions = {dep: spec["condition"] for dep, spec in svc["depends_on"].items()}
        assert conditions["kafka"] == "service_healthy", name
        assert conditions["topic-init"] == "service_completed_successfully", name
        assert conditions["postgres"] == "service_healthy", name


def test_only_a_service_that_signs_local_tokens_gets_the_private_key(compose):
    for name, svc in _regsosek_services(compose).items():
        sources = [v["source"] if isinstance(v, dict) else v.split(":", 1)[0] for v in svc.get("volumes", [])]
        if "./.local/auth" in sources:
            assert mints_local_tokens(name), f"{name} gets the local private key but signs nothing"


def test_console_calls_intake_and_notify_by_their_compose_names(compose):
    running = _regsosek_services(compose)
    env = _environment(running["console"])
    for upstream in ("intake", "notify"):
        field = f"{upstream}_url"
        assert field in settings_class("console").model_fields, field
        assert env[f"REGSOSEK_{field.upper()}"] == f"http://{upstream}:{http_port(upstream)}"


def test_postgres_is_healthy_only_once_the_last_database_exists(compose):
    """init.sql runs in the image's temporary server; the healthcheck must ask for the database it
    creates last, or a service could start before its database exists."""
    created = re.findall(r"CREATE DATABASE (\w+)", (DEPLOY / "postgres" / "init.sql").read_text(), re.I)
    check = " ".join(_command({"command": compose["services"]["postgres"]["healthcheck"]["test"]}))
    assert f"-d {created[-1]} " in check, f"the healthcheck should query {created[-1]}: {check}"


def test_mounted_files_exist(compose):
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("./.local/"):
                continue  # made on the host before `up` (the local key pair: `make token`)
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# --- deploy/ ----------------------------------------------------------------


def test_strimzi_topics_are_the_registry_rendered_now():
    assert STRIMZI_TOPICS.read_text() == render_strimzi("production"), (
        f"deploy/kafka/topics.yaml is stale; regenerate it:\n  {REGENERATE}"
    )


def test_every_registry_topic_is_deployed_with_production_durability():
    topics = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all(STRIMZI_TOPICS.read_text()) if d and d["kind"] == "KafkaTopic"
    }
    wanted = {s.name for s in specs("production")}
    assert wanted <= set(topics), f"missing from deploy/kafka/topics.yaml: {sorted(wanted - set(topics))}"
    for name in wanted:
        spec = topics[name]["spec"]
        assert spec["replicas"] == 3, name
        assert spec["config"]["min.insync.replicas"] == "2", name


def test_strimzi_kafka_cluster(versions):
    kafka = _by_kind("Kafka")["regsosek"]
    assert str(kafka["spec"]["kafka"]["version"]) == versions["KAFKA_VERSION"]
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["auto.create.topics.enable"] is False
    brokers = sum(
        p["spec"]["replicas"] for p in _by_kind("KafkaNodePool").values() if "broker" in p["spec"]["roles"]
    )
    assert brokers == 3


def test_each_service_has_its_own_postgres_cluster_and_secret():
    clusters = _by_kind("Cluster")
    deployments = _by_kind("Deployment")
    for name in SERVICES:
        cluster = clusters[f"pg-{name}"]
        assert cluster["spec"]["bootstrap"]["initdb"]["database"] == name
        env = {e["name"]: e for e in deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env["REGSOSEK_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"pg-{name}-app", "key": "uri"}, name


def test_each_deployment_is_probed_bounded_and_configured():
    deployments = _by_kind("Deployment")
    services = _by_kind("Service")
    assert set(deployments) == set(SERVICES)
    for name, dep in deployments.items():
        port, needs_auth = http_port(name), verifies_tokens(name)
        pod = dep["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == [f"regsosek-{name}"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz", name
        limit = container["resources"]["limits"]["memory"]
        # BENCHMARKS.md: max RSS ~172 MB per service; a limit must leave room above it, and stay bounded.
        assert 1.5 * 172e6 <= _bytes(limit) <= 2 * 2**30, f"{name} memory limit {limit}"
        assert _bytes(container["resources"]["requests"]["memory"]) >= 172e6, name
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez", name
        # migrations are their own step, before the service starts, which then does not migrate
        (migrate,) = pod["initContainers"]
        assert migrate["command"] == ["python", "-m", "regsosek.migrate", "--service", name], name
        assert {"name": "REGSOSEK_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": f"pg-{name}-app", "key": "uri"}}} \
            in migrate["env"], name
        assert container["ports"][0]["containerPort"] == port, name
        env = {e["name"]: e for e in container["env"]}
        assert env["REGSOSEK_HTTP_PORT"]["value"] == str(port), name
        assert env["OTEL_SERVICE_NAME"]["value"] == f"regsosek-{name}", name
        assert "REGSOSEK_AUTH_SECRET" not in env, name  # HS256 shared secrets are gone
        if needs_auth:  # each service accepts only tokens for itself; issuer and JWKS URL are shared
            assert env["REGSOSEK_AUTH_AUDIENCE"]["value"] == f"regsosek-{name}", name
        else:
            assert "REGSOSEK_AUTH_AUDIENCE" not in env, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert services[name]["spec"]["ports"][0]["port"] == port, name


def _default_settings(service: str) -> ServiceSettings:
    """The service's own settings class (e.g. intake.settings.IntakeSettings), with defaults."""
    return settings_class(service)()


def test_each_service_scales_on_its_consumer_group_lag(monkeypatch):
    """Each ScaledObject watches the group the service really joins (its settings class's
    consumer_group) on exactly the topics the registry says it consumes (which
    tests/asyncapi checks against the service's app.py)."""
    for var in [v for v in os.environ if v.startswith("REGSOSEK_")]:
        monkeypatch.delenv(var)  # defaults, as deployed: no topic prefix
    scaled = _by_kind("ScaledObject")
    assert set(scaled) == set(SERVICES)
    for name in SERVICES:
        group = _default_settings(name).consumer_group
        obj = scaled[name]
        assert obj["spec"]["scaleTargetRef"]["name"] == name
        assert obj["spec"]["minReplicaCount"] >= 2, name
        kafka = [t["metadata"] for t in obj["spec"]["triggers"] if t["type"] == "kafka"]
        assert {t["consumerGroup"] for t in kafka} == {group}, (
            f"deploy/services/{name}.yaml scales on group(s) {sorted({t['consumerGroup'] for t in kafka})}, "
            f"but {name} consumes as {group!r}")
        topics = [t.get("topic") for t in kafka]
        assert sorted(topics, key=str) == sorted(consumed_by(name)), (
            f"deploy/services/{name}.yaml watches topics {topics}; topics.yaml says {name} consumes "
            f"{consumed_by(name)}: one kafka trigger per consumed topic")
        for t in kafka:
            assert t["bootstrapServers"] == "regsosek-kafka-bootstrap.regsosek.svc:9093", name  # TLS listener
            assert t["allowIdleConsumers"] == "false", name


def test_kustomizations_name_only_existing_files():
    for kust in DEPLOY.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kust.read_text()).get("resources", []):
            assert (kust.parent / resource).exists(), f"{kust.relative_to(ROOT)} lists missing {resource}"


def test_production_services_do_not_migrate_on_start():
    kust = yaml.safe_load((DEPLOY / "services" / "kustomization.yaml").read_text())
    literals = dict(x.split("=", 1) for g in kust["configMapGenerator"] if g["name"] == "regsosek-config"
                    for x in g["literals"])
    assert literals["REGSOSEK_MIGRATE_ON_START"] == "false"
    assert ServiceSettings().migrate_on_start is True  # the local default: `make run` migrates on start


IMAGE_RE = re.compile(r"^(?P<name>[^@:]+(?::\d+)?(?:/[^@:]+)*)(?::(?P<tag>[^@]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


def _images() -> list[tuple[str, str]]:
    """(where, image) for every third-party image in docker-compose.yml and deploy/."""
    found = []
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, svc in compose["services"].items():
        if "image" in svc and "build" not in svc:
            found.append((f"docker-compose.yml {name}", svc["image"]))
    for path in DEPLOY.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            text = yaml.safe_dump(doc or {})
            for m in re.finditer(r"(?:image|imageName): (\S+)", text):
                image = m.group(1).strip("'\"")
                if image != "regsosek":  # our own image: set by kustomize `images` (deploy/kustomization.yaml)
                    found.append((str(path.relative_to(ROOT)), image))
    return found


def test_every_image_is_pinned_to_an_exact_version():
    """No :latest, no bare name, no floating major-only tag, in what is committed. Digests (@sha256:...)
    are added by the release pipeline, which can resolve them (test_a_release_is_refused_without_digests
    below); a tag with a digest is accepted too."""
    images = _images()
    assert any("postgres" in i for _, i in images) and any("kafka" in i for _, i in images)
    problems = []
    for where, image in images:
        image = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", image)  # compose defaults, e.g. ${KAFKA_VERSION:-4.3.1}
        m = IMAGE_RE.match(image)
        tag = m and m.group("tag")
        pinned_tag = bool(tag) and tag != "latest" and re.fullmatch(r"v?\d+\.\d+(\.\d+)?[-.\w]*", tag)
        if m is None or (not m.group("digest") and not pinned_tag):
            problems.append(f"{where}: {image}")
    assert not problems, "unpinned images:\n" + "\n".join(problems)


# --- images by digest: one place each, and a release refused without them ----------------------------


def _check_images():
    """deploy/check_images.py, the release pipeline's gate, loaded from its file."""
    spec = importlib.util.spec_from_file_location("check_images", DEPLOY / "check_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kustomize() -> None:
    if not (shutil.which("kustomize") or shutil.which("kubectl")):
        pytest.skip("neither kustomize nor kubectl installed: the manifests cannot be rendered here")


DIGEST = "sha256:" + "0" * 64  # a well-formed digest for the test's copy only, never written to deploy/


def test_the_digest_pattern_needs_a_full_sha256():
    ok = _check_images().DIGESTED.match
    assert ok(f"registry.example.org/regsosek:0.1.0@{DIGEST}") and ok(f"postgres@{DIGEST}")
    for bad in ("registry.example.org/regsosek:0.1.0", "postgres:15.18@sha256:abc", f"postgres:15.18@{DIGEST}x",
                "postgres:latest", f"postgres:15.18@md5:{'0' * 64}"):
        assert not ok(bad), bad


def test_a_release_is_refused_without_digests():
    """As committed, deploy/ names its images by tag only (no digest is guessed): the gate refuses it,
    naming every image of every workload, the operators' resources (CloudNativePG) included."""
    _kustomize()
    check = _check_images()
    rendered = check.render(DEPLOY)
    missing = check.without_digest(rendered)
    assert missing and missing == check.images(rendered)
    kinds = {where.split("/")[0] for where, _ in missing}
    assert {"Deployment", "CronJob", "Cluster"} <= kinds, kinds
    assert check.main([str(DEPLOY)]) == 1


def test_a_release_with_the_digests_set_in_the_one_list_passes(tmp_path: Path):
    """The release pipeline's step: digests written into deploy/kustomization.yaml's `images` (one
    entry per image, as `kustomize edit set image NAME=...@sha256:...` writes them) pin every image the
    manifests render, the CloudNativePG clusters' imageName too."""
    _kustomize()
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    kust_path = copy / "kustomization.yaml"
    kust = yaml.safe_load(kust_path.read_text())
    for entry in kust["images"]:
        entry["digest"] = DIGEST
    kust_path.write_text(yaml.safe_dump(kust, sort_keys=False))
    check = _check_images()
    rendered = check.render(copy)
    assert check.without_digest(rendered) == []
    refs = {image for _, image in check.images(rendered)}
    names = {e.get("newName", e["name"]) for e in kust["images"]}
    assert {r.split("@")[0].rsplit(":", 1)[0] for r in refs} == names, "an image outside the one list"
    assert check.main([str(copy)]) == 0


def test_compose_takes_third_party_digests_from_one_file(compose):
    """Each third-party image of docker-compose.yml is its exact tag followed by a variable of
    deploy/images.env (empty until resolved; `docker compose --env-file deploy/images.env up`), and a
    value set there is a digest."""
    env = {}
    for line in IMAGES_ENV.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
            assert value.strip() == "" or re.fullmatch(r"@sha256:[0-9a-f]{64}", value.strip()), key
    used = set()
    for name, svc in compose["services"].items():
        if "image" in svc and "build" not in svc:
            m = re.fullmatch(r"[^$@]+(?:\$\{KAFKA_VERSION:-[^}]+\})?\$\{([A-Z_]+_DIGEST):-\}", svc["image"])
            assert m, f"docker-compose.yml {name}: {svc['image']} does not end with its digest variable"
            assert m.group(1) in env, f"{m.group(1)} is not in deploy/images.env"
            used.add(m.group(1))
    assert used == set(env), f"deploy/images.env names images compose does not run: {sorted(set(env) - used)}"
    filled = {k: "@" + DIGEST for k in env}
    for name, svc in compose["services"].items():
        if "image" in svc and "build" not in svc:
            image = re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: filled.get(m.group(1), m.group(2)), svc["image"])
            assert _check_images().DIGESTED.match(image), f"{name}: {image}"
