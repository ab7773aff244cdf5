"""Topic registry: the enum, topics.yaml and the rendered profiles agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from regsosek.settings import ServiceSettings
from regsosek.topics import (
    REGISTRY_FILE,
    Topic,
    consumer_group,
    redelivery_window_ms,
    render_strimzi,
    specs,
    topic_prefix,
    wire_name,
)


def yaml_names() -> list[str]:
    return [t["name"] for t in yaml.safe_load(REGISTRY_FILE.read_text())["topics"]]


def test_enum_equals_registry_names():
    assert {t.value for t in Topic} == set(yaml_names())
    assert len(yaml_names()) == len(set(yaml_names())), "a topic is listed twice in topics.yaml"


@pytest.mark.parametrize("profile", ["local", "production"])
def test_specs_cover_every_topic(profile):
    assert [s.name for s in specs(profile)] == yaml_names()


def test_production_profile_durability():
    prod = specs("production")
    assert prod
    for s in prod:
        assert s.replication_factor == 3, s.name
        assert s.config["min.insync.replicas"] == "2", s.name
        assert int(s.config["min.insync.replicas"]) < s.replication_factor
        assert s.partitions == 96


def test_local_profile():
    for s in specs("local"):
        assert s.replication_factor == 1
        assert s.config["min.insync.replicas"] == "1"
        assert s.partitions == 6


@pytest.mark.parametrize("profile", ["local", "production"])
def test_config_values_are_strings_and_defaults_apply(profile):
    for s in specs(profile):
        assert all(isinstance(v, str) for v in s.config.values())
        assert s.config["cleanup.policy"] == "delete"
        # the dead-letter topic holds any accepted record plus the dlq_* headers
        expected = "4194304" if s.name == "dead-letter" else "2097152"
        assert s.config["max.message.bytes"] == expected


@pytest.mark.parametrize(
    "topic,production,local",
    [("sls-roster", "2592000000", "604800000"), ("interview-submitted", "1209600000", "604800000"),
     ("interview-verified", "1209600000", "604800000"), ("dead-letter", "1209600000", "604800000"),
     ("family-classified", "2592000000", "604800000")],
)
def test_retention_per_profile(topic, production, local):
    for profile, expected in (("production", production), ("local", local)):
        by_name = {s.name: s for s in specs(profile)}
        assert by_name[topic].config["retention.ms"] == expected, (topic, profile)


def test_every_topic_states_its_retention_and_none_keeps_forever():
    """Privacy by design: each topic says how long it keeps records, in both profiles, and none
    keeps them forever (personal data is never kept without a limit)."""
    reg = yaml.safe_load(REGISTRY_FILE.read_text())
    assert "retention.ms" not in reg["defaults"]["config"], "retention is chosen per topic, not by default"
    for t in reg["topics"]:
        assert set(t.get("retention_days", {})) == {"local", "production"}, t["name"]
        assert "retention.ms" not in t.get("config", {}), f"{t['name']}: use retention_days"
    for profile in ("local", "production"):
        for s in specs(profile):
            assert 0 < int(s.config["retention.ms"]) <= 30 * 24 * 3600 * 1000, (s.name, profile)


def test_full_interviews_and_dead_letters_are_kept_for_the_shortest_time():
    prod = {s.name: int(s.config["retention.ms"]) for s in specs("production")}
    shortest = min(prod.values())
    for name in ("interview-submitted", "dead-letter"):
        assert prod[name] == shortest == 14 * 24 * 3600 * 1000, name


def test_redelivery_window_is_longest_consumed_retention_plus_a_segment():
    day = 24 * 3600 * 1000
    assert redelivery_window_ms("verify", "production") == (30 + 7) * day  # sls-roster 30 days + segment.ms
    assert redelivery_window_ms("verify", "local") == (7 + 7) * day
    assert redelivery_window_ms("no-such-service", "production") is None


def test_rendered_deploy_file_is_current():
    rendered = (Path(__file__).resolve().parents[3] / "deploy" / "kafka" / "topics.yaml").read_text()
    assert rendered == render_strimzi("production"), "deploy/kafka/topics.yaml is stale: run `make topics-render`"


def test_unknown_profile_raises():
    with pytest.raises(KeyError):
        specs("staging-that-does-not-exist")


def test_wire_without_prefix(monkeypatch):
    monkeypatch.delenv("REGSOSEK_TOPIC_PREFIX", raising=False)
    assert Topic.SLS_ROSTER.wire == "sls-roster"
    assert Topic.DEAD_LETTER.wire == "dead-letter"


@pytest.mark.parametrize("prefix", ["test-1234.", "ci_", "x"])
def test_wire_honours_prefix(monkeypatch, prefix):
    monkeypatch.setenv("REGSOSEK_TOPIC_PREFIX", prefix)
    for t in Topic:
        assert t.wire == prefix + t.value
    # the enum value itself never carries the prefix
    assert Topic.INTERVIEW_SUBMITTED == "interview-submitted"


def test_one_prefix_rule_for_topics_groups_and_settings(monkeypatch):
    monkeypatch.setenv("REGSOSEK_TOPIC_PREFIX", "w1.")
    settings = ServiceSettings(service_name="verify")
    assert topic_prefix() == settings.topic_prefix == "w1."
    assert wire_name("sls-roster") == Topic.SLS_ROSTER.wire == "w1.sls-roster"
    assert consumer_group("verify") == settings.consumer_group == "w1.regsosek-verify"
    monkeypatch.delenv("REGSOSEK_TOPIC_PREFIX")
    assert settings.topic_prefix == "" and settings.consumer_group == "regsosek-verify"


def test_an_explicit_prefix_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("REGSOSEK_TOPIC_PREFIX", "env.")
    assert wire_name("dead-letter", "bench1.") == "bench1.dead-letter"
    assert consumer_group("notify", "bench1.") == "bench1.regsosek-notify"
    assert wire_name("dead-letter", "") == "dead-letter"


def test_render_strimzi_production():
    docs = [d for d in yaml.safe_load_all(render_strimzi("production", namespace="ns1")) if d]
    assert [d["metadata"]["name"] for d in docs] == yaml_names()
    for d in docs:
        assert d["kind"] == "KafkaTopic"
        assert d["metadata"]["namespace"] == "ns1"
        assert d["spec"]["replicas"] == 3
        assert d["spec"]["config"]["min.insync.replicas"] == "2"
