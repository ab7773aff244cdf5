"""deploy/ keeps the bus authenticated and the network closed (issue 11, item 7), read from the files:

- the Strimzi Kafka has only TLS listeners with SCRAM-SHA-512 and `authorization: simple`;
- one KafkaUser per service whose ACLs are exactly the topic registry's: Write on what it produces,
  Read on what it consumes, its own consumer group, nothing else;
- every Deployment logs in as its own user over TLS, with the cluster CA, and checks PostgreSQL's
  certificate (verify-full against its cluster's CA);
- a default-deny NetworkPolicy plus policies selecting every workload deploy/ creates; a service
  reaches its own PostgreSQL cluster only.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from compose_services import SERVICES, http_port

from regsosek.topics import consumed_by, consumer_group, produced_by, specs

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _docs() -> list[dict]:
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path.name == "otel-collector.yaml":
            continue
        out.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return out


def _kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _docs() if d.get("kind") == kind}


def _config() -> dict[str, str]:
    kust = yaml.safe_load((DEPLOY / "services" / "kustomization.yaml").read_text())
    (cm,) = [g for g in kust["configMapGenerator"] if g["name"] == "regsosek-config"]
    return dict(item.split("=", 1) for item in cm["literals"])


def _acls(user: str) -> set[tuple[str, str, str, str]]:
    """(resource type, name, pattern, operation) of a KafkaUser."""
    spec = _kind("KafkaUser")[user]["spec"]
    assert spec["authentication"]["type"] == "scram-sha-512", user
    assert spec["authorization"]["type"] == "simple", user
    out = set()
    for rule in spec["authorization"]["acls"]:
        r = rule["resource"]
        assert rule.get("host", "*") == "*"
        for op in rule["operations"]:
            out.add((r["type"], r["name"], r.get("patternType", "literal"), op))
    return out


def test_kafka_listeners_are_tls_with_scram_and_acls_decide():
    kafka = _kind("Kafka")["regsosek"]["spec"]["kafka"]
    assert kafka["listeners"], "no listener"
    for listener in kafka["listeners"]:
        assert listener["tls"] is True, f"listener {listener['name']} without TLS"
        assert listener.get("authentication", {}).get("type") == "scram-sha-512", listener["name"]
        peers = listener.get("networkPolicyPeers") or []
        assert peers, f"listener {listener['name']} open to every pod (no networkPolicyPeers)"
    assert kafka["authorization"]["type"] == "simple"


def test_each_service_user_may_do_exactly_what_the_registry_says():
    topics = {s.name for s in specs()}
    for svc in SERVICES:
        acls = _acls(svc)
        write = {n for t, n, p, op in acls if t == "topic" and op == "Write"}
        read = {n for t, n, p, op in acls if t == "topic" and op == "Read"}
        assert write == set(produced_by(svc)), f"{svc} may write {sorted(write)}; it produces {produced_by(svc)}"
        assert read == set(consumed_by(svc)), f"{svc} may read {sorted(read)}; it consumes {consumed_by(svc)}"
        assert all(p == "literal" for t, n, p, op in acls if t == "topic"), f"{svc}: topic ACLs must name topics"
        assert {n for t, n, p, op in acls if t == "topic"} <= topics, svc
        groups = {(n, p, op) for t, n, p, op in acls if t == "group"}
        group = consumer_group(svc, prefix="")  # as deployed: no topic prefix
        assert groups == {(group, "prefix", "Read"), (group, "prefix", "Describe")}, svc
        ops = {op for *_, op in acls}
        assert ops <= {"Read", "Write", "Describe"}, f"{svc} has {sorted(ops - {'Read', 'Write', 'Describe'})}"
        assert not [a for a in acls if a[0] not in ("topic", "group")], f"{svc}: cluster or other ACLs"
        describe = {n for t, n, p, op in acls if t == "topic" and op == "Describe"}
        assert describe == read | write, svc


def test_keda_may_describe_every_topic_and_group_a_scaled_object_watches():
    """A trigger on a topic KEDA may not describe yields no lag: the service would never scale on it."""
    keda = _acls("keda")
    topics = {n for t, n, p, op in keda if t == "topic" and op == "Describe" and p == "literal"}
    prefixes = [n for t, n, p, op in keda if t == "group" and op == "Describe" and p == "prefix"]
    for name, obj in _kind("ScaledObject").items():
        for t in obj["spec"]["triggers"]:
            if t["type"] == "kafka":
                assert t["metadata"]["topic"] in topics, f"{name}: keda may not describe {t['metadata']['topic']}"
                assert any(t["metadata"]["consumerGroup"].startswith(p) for p in prefixes), name


def test_the_keda_and_operator_users_stay_narrow():
    keda = _acls("keda")
    assert {op for *_, op in keda} == {"Describe"}, "KEDA only needs to describe offsets"
    operator = _acls("regsosek-operator")
    assert {n for t, n, p, op in operator if op == "Read"} == {"dead-letter"}
    assert "dead-letter" not in {n for t, n, p, op in operator if op == "Write"}


def test_the_operator_may_redrive_a_dead_letter_of_every_consumed_topic():
    """A dead letter goes back to the topic it came from: every topic some service consumes, and no other."""
    consumed = {t for svc in SERVICES for t in consumed_by(svc)} - {"dead-letter"}
    operator = _acls("regsosek-operator")
    write = {n for t, n, p, op in operator if t == "topic" and op == "Write"}
    assert write == consumed, f"missing {sorted(consumed - write)}, extra {sorted(write - consumed)}"
    assert {n for t, n, p, op in operator if op == "Describe" and t == "topic"} == write | {"dead-letter"}


def test_every_deployment_uses_its_own_kafka_user_over_tls_and_verifies_postgres():
    config = _config()
    assert config["REGSOSEK_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["REGSOSEK_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert config["REGSOSEK_KAFKA_BOOTSTRAP"].endswith(":9093")
    assert config["PGSSLMODE"] == "verify-full"
    for name, dep in _kind("Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["REGSOSEK_KAFKA_SASL_USERNAME"] == name, name
        assert name in _kind("KafkaUser"), f"no KafkaUser {name}"
        assert "REGSOSEK_KAFKA_SASL_PASSWORD" not in env, f"{name}: the password comes from a mounted file"
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}

        def secret_behind(path: str, name: str = name, mounts: dict = mounts, volumes: dict = volumes) -> str:
            folder = str(Path(path).parent)
            assert folder in mounts, f"{name}: nothing mounted at {folder}"
            return volumes[mounts[folder]]["secret"]["secretName"]

        assert secret_behind(env["REGSOSEK_KAFKA_SASL_PASSWORD_FILE"]) == name, name  # the User Operator's Secret
        assert secret_behind(config["REGSOSEK_KAFKA_SSL_CA_FILE"]) == "regsosek-cluster-ca-cert", name
        assert secret_behind(config["PGSSLROOTCERT"]) == f"pg-{name}-ca", name


def test_scaled_objects_authenticate_to_kafka():
    auth = _kind("TriggerAuthentication")["keda-kafka"]["spec"]["secretTargetRef"]
    assert {r["parameter"] for r in auth} == {"username", "password", "ca"}
    for name, obj in _kind("ScaledObject").items():
        for t in obj["spec"]["triggers"]:
            if t["type"] == "kafka":
                assert t["authenticationRef"]["name"] == "keda-kafka", name
                assert t["metadata"]["sasl"] == "scram_sha512" and t["metadata"]["tls"] == "enable", name


def _selects(policy: dict, labels: dict[str, str]) -> bool:
    match = policy["spec"]["podSelector"].get("matchLabels") or {}
    assert not policy["spec"]["podSelector"].get("matchExpressions"), "matchExpressions not handled here"
    return all(labels.get(k) == v for k, v in match.items())


def _workloads() -> dict[str, dict[str, str]]:
    """Pod labels of every workload deploy/ creates (directly, or through the operators)."""
    out = {f"Deployment/{n}": d["spec"]["template"]["metadata"]["labels"] for n, d in _kind("Deployment").items()}
    for n, c in _kind("CronJob").items():
        out[f"CronJob/{n}"] = c["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    for n in _kind("Kafka"):
        out[f"Kafka/{n}"] = {"strimzi.io/cluster": n}
    for n in _kind("Cluster"):
        out[f"Cluster/{n}"] = {"cnpg.io/cluster": n}
    return out


def test_default_deny_and_every_workload_has_its_policy():
    policies = _kind("NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for workload, labels in _workloads().items():
        own = [n for n, p in policies.items() if n != "default-deny" and _selects(p, labels)]
        assert own, f"{workload} has no NetworkPolicy of its own: default-deny would cut it off"


def test_each_service_reaches_kafka_and_only_its_own_database():
    policies = _kind("NetworkPolicy")
    for svc in SERVICES:
        egress = policies[svc]["spec"]["egress"]
        peers = [peer for rule in egress for peer in rule.get("to", [])]
        clusters = {p["podSelector"]["matchLabels"]["cnpg.io/cluster"] for p in peers
                    if "cnpg.io/cluster" in p.get("podSelector", {}).get("matchLabels", {})}
        assert clusters == {f"pg-{svc}"}, f"{svc} may reach {sorted(clusters)}"
        kafka = [r for r in egress if any(p.get("podSelector", {}).get("matchLabels") == {"strimzi.io/cluster": "regsosek"}
                                          for p in r.get("to", []))]
        assert kafka and all(port["port"] == 9093 for r in kafka for port in r["ports"]), svc
        pg = policies[f"pg-{svc}"]["spec"]["ingress"]
        apps = {p["podSelector"]["matchLabels"].get("app.kubernetes.io/name") for r in pg for p in r["from"]
                if "podSelector" in p} - {None}
        # classify's replay/re-rank Jobs (classify-jobs.yaml) write to classify's database too; the operators'
        # dead-letter pod of this service writes its audit log (services/deadletters.yaml)
        assert apps == ({svc, "classify-job", "deadletters"} if svc == "classify" else {svc, "deadletters"}), \
            f"pg-{svc} admits {sorted(apps)}"
        components = {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for r in pg for p in r["from"]
                      if p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "deadletters"}
        assert components == {svc}, f"pg-{svc} admits the dead-letter pods of {sorted(components, key=str)}"
    for svc in ("intake", "notify", "console"):  # reached by people and devices through the ingress controller
        ingress = policies[svc]["spec"]["ingress"]
        assert any(p.get("namespaceSelector") for r in ingress for p in r["from"]), svc


def _pod_peers(rules: list[dict], side: str) -> set[tuple[str, int]]:
    """(app name, port) pairs a policy's rules admit to or from pods of this namespace."""
    out = set()
    for rule in rules:
        for peer in rule.get(side, []):
            app = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            if app:
                out |= {(app, port["port"]) for port in rule.get("ports", [])}
    return out


def test_the_console_reaches_the_apis_it_calls_and_they_admit_it():
    """The console calls intake's, notify's and classify's HTTP APIs (REGSOSEK_INTAKE_URL, REGSOSEK_NOTIFY_URL,
    REGSOSEK_CLASSIFY_URL): its egress allows exactly those Services' ports, and their ingress admits the
    console's pods there."""
    policies = _kind("NetworkPolicy")
    (container,) = _kind("Deployment")["console"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    called = {}
    for var in ("REGSOSEK_INTAKE_URL", "REGSOSEK_NOTIFY_URL", "REGSOSEK_CLASSIFY_URL"):
        m = re.fullmatch(r"http://(\w+)\.regsosek\.svc:(\d+)", env[var])
        assert m, f"{var}={env[var]!r}: the Service of a service in namespace regsosek"
        called[m.group(1)] = int(m.group(2))
    services = _kind("Service")
    for svc, port in called.items():
        assert services[svc]["spec"]["ports"][0]["port"] == port == http_port(svc), svc
    egress = _pod_peers(policies["console"]["spec"]["egress"], "to")
    assert egress == set(called.items()), f"console may reach pods {sorted(egress)}"
    for svc, port in called.items():
        assert ("console", port) in _pod_peers(policies[svc]["spec"]["ingress"], "from"), f"{svc} does not admit console"
    others = [n for n in SERVICES if n not in called and n != "console"]
    for n in others:
        assert "console" not in {a for a, _ in _pod_peers(policies[n]["spec"].get("ingress", []), "from")}, n


def test_the_kafka_listener_and_policy_admit_every_service():
    kafka = _kind("Kafka")["regsosek"]["spec"]["kafka"]
    for listener in kafka["listeners"]:
        apps = {p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                for p in listener["networkPolicyPeers"]}
        assert set(SERVICES) <= apps, f"listener {listener['name']} leaves out {sorted(set(SERVICES) - apps)}"
    admitted = {a for a, _ in _pod_peers(_kind("NetworkPolicy")["kafka"]["spec"]["ingress"], "from")}
    assert set(SERVICES) <= admitted, sorted(set(SERVICES) - admitted)


def test_users_file_names_the_registry_topics_only():
    text = (DEPLOY / "kafka" / "users.yaml").read_text()
    names = set(re.findall(r"type: topic\n\s+name: (\S+)", text))
    assert names <= {s.name for s in specs()}, sorted(names - {s.name for s in specs()})


def test_each_dead_letter_producer_has_an_audited_operator_shell():
    """docs/DEADLETTERS.md: in production show and redrive are audited in the database of the service whose
    dead letters are handled. Each service that writes dead letters (topics.yaml) has a template pod with the
    operator's Kafka user and that service's database (and its CA) only."""
    jobs = _kind("CronJob")
    writers = [s for s in SERVICES if "dead-letter" in produced_by(s)]
    assert writers, "no service writes dead letters?"
    for svc in writers:
        job = jobs[f"deadletters-{svc}"]
        assert job["spec"]["suspend"] is True, svc
        pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["REGSOSEK_KAFKA_SASL_USERNAME"]["value"] == "regsosek-operator", svc
        assert env["REGSOSEK_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": f"pg-{svc}-app", "key": "uri"}, svc
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert secrets == {"regsosek-operator", "regsosek-cluster-ca-cert", f"pg-{svc}-ca"}, svc
    assert {n for n in jobs if n.startswith("deadletters-")} == {f"deadletters-{s}" for s in writers}
