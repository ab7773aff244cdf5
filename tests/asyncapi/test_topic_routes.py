"""topics.yaml's `producers`, `consumers` and `contract` agree with the services' code.

Why: the registry is the single place that says who publishes and who consumes each
topic; the AsyncAPI document and the KEDA triggers in deploy/ are derived from it. These
tests keep it honest against what each service's app.py subscribes to, which contracts its
handlers accept, and where its code publishes (a static read of `publish(Topic.X, ...)`
calls and `topic=Topic.X` arguments anywhere, and of every `Topic.X` named in the service's
publisher.py, the one place that builds its outgoing events), so a new subscription or a new event cannot be added
without the registry (and so the document and the scaling) following.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from regsosek import contracts
from regsosek.contracts import EVENT_TYPES
from regsosek.topics import Topic, consumed_by, produced_by, specs

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["intake", "verify", "classify", "notify", "console"]


def _definition(service: str):
    app = importlib.import_module(f"{service}.app")
    settings_cls = next(v for k, v in vars(importlib.import_module(f"{service}.settings")).items()
                        if k.endswith("Settings") and k.lower().startswith(service))
    return app.definition(settings_cls())


def _published_topics(service: str) -> set[str]:
    """Topic enum members the service's code passes as the topic of a publish, and those its
    publisher names."""
    found: set[str] = set()
    for path in (ROOT / "services" / service / "src" / service).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if path.name == "publisher.py" and isinstance(node, ast.Attribute) \
                    and isinstance(node.value, ast.Name) and node.value.id == "Topic":
                found.add(Topic[node.attr].value)
            if not isinstance(node, ast.Call):
                continue
            candidates = [kw.value for kw in node.keywords if kw.arg == "topic"]
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "publish" and node.args:
                candidates.append(node.args[0])
            for c in candidates:
                if isinstance(c, ast.Attribute) and isinstance(c.value, ast.Name) and c.value.id == "Topic":
                    found.add(Topic[c.attr].value)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_registry_consumers_are_the_app_subscriptions(service):
    subscribed = [t.value for t in _definition(service).topics]
    assert sorted(subscribed) == sorted(consumed_by(service)), (
        f"{service}/app.py subscribes to {sorted(subscribed)} but topics.yaml lists {service} as a consumer of "
        f"{sorted(consumed_by(service))}; change `consumers:` in libs/regsosek/src/regsosek/topics.yaml")


@pytest.mark.parametrize("service", SERVICES)
def test_handlers_accept_exactly_the_contracts_of_the_consumed_topics(service):
    from regsosek.contracts import LEGACY_EVENT_TYPES

    # legacy (read-only) types are handled on the topic of the type that replaced them
    handled = {m.__name__ for m in _definition(service).handlers if m not in LEGACY_EVENT_TYPES}
    carried = {s.contract for s in specs() if service in s.consumers}
    assert handled == carried, f"{service}: handlers for {sorted(handled)}, registry contracts {sorted(carried)}"


@pytest.mark.parametrize("service", SERVICES)
def test_registry_producers_are_where_the_code_publishes(service):
    published = _published_topics(service)
    registry = set(produced_by(service)) - {Topic.DEAD_LETTER.value}
    assert published == registry, (
        f"{service} publishes to {sorted(published)} but topics.yaml lists it as a producer of {sorted(registry)}")


def test_every_consuming_service_produces_dead_letters():
    consuming = {s for s in SERVICES if _definition(s).handlers}
    dead = next(s for s in specs() if s.name == Topic.DEAD_LETTER.value)
    assert set(dead.producers) == consuming
    assert dead.contract is None


def test_each_event_contract_is_carried_by_exactly_one_topic():
    carried = [s.contract for s in specs() if s.contract]
    assert sorted(carried) == sorted(m.__name__ for m in EVENT_TYPES)
    for name in carried:
        assert getattr(contracts, name) in EVENT_TYPES


def test_every_topic_names_only_known_services_and_has_a_producer():
    for s in specs():
        assert s.producers, s.name
        assert set(s.producers) <= set(SERVICES), s.name
        assert set(s.consumers) <= set(SERVICES), s.name


def test_static_scan_sees_a_publish():
    """The scan is not vacuous: verify's handlers publish interview-verified."""
    assert Topic.INTERVIEW_VERIFIED.value in _published_topics("verify")
