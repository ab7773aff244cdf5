"""deploy/monitoring: the alert rules pass Prometheus' own checker and unit tests (promtool),
and every alert and dashboard query names metrics that something really exports: the
code's prometheus_client definitions, or the exporters deploy/ configures.

promtool comes with the Debian package `prometheus`; scripts/bootstrap.sh installs it.
The dashboard is type-checked against Grafana's published dashboard schema: the `Dashboard` type that
@grafana/schema generates from it, with TypeScript's compiler (pinned in
deploy/monitoring/dashboard-schema/, installed from the npm registry into .local/ on first use).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
RULE_TESTS = MONITORING / "rules-tests.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RUNBOOK = ROOT / "RUNBOOK.md"
SCHEMA_CHECK = MONITORING / "dashboard-schema"
SCHEMA_INSTALL = ROOT / ".local" / "dashboard-schema"

# Metrics from exporters that deploy/ turns on, by name prefix: Strimzi's Kafka Exporter
# (kafkaExporter in deploy/kafka/kafka.yaml).
EXTERNAL = {"kafka_consumergroup_": ROOT / "deploy" / "kafka" / "kafka.yaml"}

PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate", "deriv", "delta",
    "histogram_quantile", "max_over_time", "min_over_time", "avg_over_time", "time", "and", "or", "unless",
    "on", "ignoring", "group_left", "group_right", "le", "bool", "offset", "absent", "label_values", "topk",
    "humanize", "humanizeDuration", "humanizePercentage",
}


def exported_metrics() -> set[str]:
    """Every series name the code's prometheus_client metrics expose."""
    names: set[str] = set()
    for path in [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("Counter", "Gauge", "Histogram", "Summary") and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                continue
            name = node.args[0].value
            if node.func.id == "Counter":
                base = name.removesuffix("_total")
                names |= {f"{base}_total", f"{base}_created"}
            elif node.func.id in ("Histogram", "Summary"):
                names |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that are metric names (not functions, keywords, labels,
    durations or template variables)."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in PROMQL_WORDS}


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    assert doc["kind"] == "PrometheusRule"
    return [r for g in doc["spec"]["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def check_known(where: str, expr: str, known: set[str]) -> list[str]:
    problems = []
    for name in metric_names(expr):
        if name in known:
            continue
        prefix = next((p for p in EXTERNAL if name.startswith(p)), None)
        if prefix is None:
            problems.append(f"{where}: {name} is exported by nothing in the code or deploy/")
    return problems


def test_every_alert_and_panel_queries_metrics_that_exist():
    known = exported_metrics()
    assert {"regsosek_http_requests_total", "regsosek_event_loop_lag_seconds", "regsosek_notify_suspended",
            "regsosek_http_request_duration_seconds_bucket"} <= known  # the parser itself works
    problems = []
    for r in rules():
        problems += check_known(f"alert {r['alert']}", r["expr"], known)
    for i, expr in enumerate(dashboard_exprs()):
        problems += check_known(f"dashboard query {i}", expr, known)
    assert not problems, "\n".join(problems)
    for prefix, where in EXTERNAL.items():  # and the exporters named are configured
        assert "kafkaExporter" in where.read_text(), f"{prefix}* needs the Kafka Exporter in {where}"


def test_the_checker_would_catch_a_misspelt_metric():
    assert check_known("x", 'sum by (service) (rate(regsosek_http_request_total{status=~"5.."}[5m]))',
                       exported_metrics()) == ["x: regsosek_http_request_total is exported by nothing in the code or deploy/"]


def test_every_alert_has_a_severity_and_a_runbook_section_that_exists():
    sections = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#{2,3} (.+)$", RUNBOOK.read_text(), re.MULTILINE)}
    names = set()
    for r in rules():
        names.add(r["alert"])
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        anchor = r["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in sections, f"{r['alert']}: RUNBOOK.md has no section #{anchor}"
        assert r["alert"] in RUNBOOK.read_text(), f"RUNBOOK.md does not name the alert {r['alert']}"
    assert {"RegsosekConsumerLagGrowing", "RegsosekDeadLettersArriving", "RegsosekOutboxBacklog",
            "RegsosekOutboxRejectedRows", "RegsosekSubscriptionSuspended", "RegsosekHttp5xxRate",
            "RegsosekHttpLatencyP99", "RegsosekRelayStalled", "RegsosekEventLoopLag",
            "RegsosekRetentionNotRunning"} <= names


def test_dashboard_is_a_grafana_dashboard():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and isinstance(doc["schemaVersion"], int)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        assert p["type"] in ("timeseries", "stat", "table", "gauge")
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["targets"] and all(t["refId"] and t["expr"] for t in p["targets"])


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus; scripts/bootstrap.sh installs it "
                    "when run as root)")
    return path


def test_rules_pass_promtool_check_and_unit_tests(tmp_path: Path):
    tool = promtool()
    spec = yaml.safe_load(RULES.read_text())["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(RULE_TESTS, tmp_path / "rules-tests.yaml")
    check = subprocess.run([tool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout + check.stderr
    test = subprocess.run([tool, "test", "rules", "rules-tests.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr


def test_promtool_fails_a_broken_rule(tmp_path: Path):
    """The check above can fail: a syntax error is caught."""
    tool = promtool()
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(
        {"groups": [{"name": "x", "rules": [{"alert": "Bad", "expr": "sum by (service (regsosek_relay_stalled)"}]}]}))
    check = subprocess.run([tool, "check", "rules", "bad.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode != 0


def _schema_checker() -> Path:
    """The pinned @grafana/schema and TypeScript (deploy/monitoring/dashboard-schema), installed with
    `npm ci` into .local/dashboard-schema once, and again whenever the pins change."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("node and npm not installed (Debian: apt-get install nodejs npm): the dashboard cannot be "
                    "checked against Grafana's schema here")
    SCHEMA_INSTALL.mkdir(parents=True, exist_ok=True)
    lock = (SCHEMA_CHECK / "package-lock.json").read_text()
    installed = SCHEMA_INSTALL / "node_modules" / ".package-lock.json"
    if not installed.is_file() or (SCHEMA_INSTALL / "package-lock.json").read_text() != lock:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(SCHEMA_CHECK / name, SCHEMA_INSTALL / name)
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=SCHEMA_INSTALL,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"npm ci of the pinned schema checker failed:\n{done.stdout}{done.stderr}"
    return SCHEMA_INSTALL


def _type_check(dashboard: dict, folder: Path) -> subprocess.CompletedProcess:
    """tsc on `const dashboard: Dashboard = <the JSON>`: every field must exist in Grafana's schema
    (excess properties of an object literal are errors) with the schema's type."""
    tool = _schema_checker()
    (folder / "node_modules").symlink_to(tool / "node_modules", target_is_directory=True)
    shutil.copy(SCHEMA_CHECK / "tsconfig.json", folder / "tsconfig.json")
    (folder / "dashboard.ts").write_text(
        "import type { Dashboard } from '@grafana/schema/dist/esm/raw/dashboard/x/Dashboard_types.gen';\n\n"
        f"export const dashboard: Dashboard = {json.dumps(dashboard, indent=1)};\n")
    return subprocess.run(["node", str(tool / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "."],
                          cwd=folder, capture_output=True, text=True, timeout=300)


def test_dashboard_passes_grafanas_published_schema(tmp_path: Path):
    result = _type_check(json.loads(DASHBOARD.read_text()), tmp_path)
    assert result.returncode == 0, f"grafana-dashboard.json breaks Grafana's dashboard schema:\n{result.stdout}"


def test_the_schema_check_catches_a_wrong_type_and_an_unknown_field(tmp_path: Path):
    doc = json.loads(DASHBOARD.read_text())
    doc["refresh"] = 30  # a string in the schema ("30s")
    doc["panels"][0]["gridPos"]["w"] = "12"  # a number
    doc["panels"][1]["queries"] = []  # no such field of a panel (targets is)
    result = _type_check(doc, tmp_path)
    assert result.returncode != 0
    assert result.stdout.count("error TS") == 3, result.stdout
