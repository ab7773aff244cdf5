"""The AsyncAPI document: valid AsyncAPI 3.0, faithful to the envelope and the contracts,
and committed as rendered now.

Why: integrators build on docs/asyncapi.yaml and docs/schemas/. A contract change that is
not re-rendered (`make asyncapi-render`) would leave them describing events the services no
longer send; these tests fail instead. Validation uses the official AsyncAPI 3.0.0 JSON
Schema vendored in vendor/asyncapi/ (see its NOTICE.md), and a set of deliberately broken
documents proves the validator really walks that schema's $refs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jsonschema import Draft7Validator, Draft202012Validator

from regsosek import asyncapi
from regsosek.contracts import EVENT_TYPES
from regsosek.envelope import new_envelope
from regsosek.messaging import EventConsumer, Outbox, RelayWakeup
from regsosek.settings import ServiceSettings
from regsosek.topics import specs

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "asyncapi.yaml"
SCHEMAS_DIR = ROOT / "docs" / "schemas"
ASYNCAPI_SCHEMA = ROOT / "vendor" / "asyncapi" / "asyncapi-3.0.0-without-id.json"
STALE = "is stale: a contract or topics.yaml changed; regenerate with `make asyncapi-render`"
TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=1"}


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema"
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.fixture(scope="module")
def doc() -> dict:
    return asyncapi.document()


def _errors(validator: Draft7Validator, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}"
            for e in validator.iter_errors(document)]


def _within(doc: dict, schema: dict) -> dict:
    """`schema` with the document's components beside it, so `#/components/...` resolves."""
    return {**schema, "components": doc["components"]}


# --- committed files -------------------------------------------------------------------


def test_committed_document_is_the_fresh_render():
    assert COMMITTED.is_file(), f"docs/asyncapi.yaml is missing; {STALE}"
    assert COMMITTED.read_text() == asyncapi.render(), f"docs/asyncapi.yaml {STALE}"


def test_committed_schemas_and_samples_are_the_fresh_render():
    wanted = asyncapi.schema_files()
    present = {p.relative_to(SCHEMAS_DIR).as_posix() for p in SCHEMAS_DIR.rglob("*.json")}
    assert present == set(wanted), f"docs/schemas {STALE} (extra: {sorted(present - set(wanted))}, " \
                                   f"missing: {sorted(set(wanted) - present)})"
    for rel, text in wanted.items():
        assert (SCHEMAS_DIR / rel).read_text() == text, f"docs/schemas/{rel} {STALE}"


def test_schemas_command_writes_the_files_and_removes_retired_ones(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "retired.event.v1.json").write_text("{}")
    (tmp_path / "samples" / "retired.event.v1.json").write_text("{}")
    assert asyncapi.main(["schemas", str(tmp_path)]) == 0
    written = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in tmp_path.rglob("*.json")}
    assert written == asyncapi.schema_files()


# --- valid AsyncAPI 3.0 ------------------------------------------------------------------


def test_committed_document_is_valid_asyncapi_3(validator):
    errors = _errors(validator, yaml.safe_load(COMMITTED.read_text()))
    assert not errors, "docs/asyncapi.yaml breaks the AsyncAPI 3.0.0 schema:\n" + "\n".join(errors)


def test_document_with_a_topic_prefix_is_valid_asyncapi_3(validator):
    errors = _errors(validator, asyncapi.document(prefix="test-1234."))
    assert not errors, "\n".join(errors)


def _set(path: str, value):
    def mutate(d: dict) -> None:
        *parents, last = path.split("/")
        for p in parents:
            d = d[p]
        d[last] = value
    return mutate


def _delete(path: str):
    def mutate(d: dict) -> None:
        *parents, last = path.split("/")
        for p in parents:
            d = d[p]
        del d[last]
    return mutate


# Each break sits behind one or more of the AsyncAPI schema's $refs (operation, channel,
# bindings, message, server definitions): a validator that did not follow them would pass.
BROKEN = {
    "wrong asyncapi version": _set("asyncapi", "2.6.0"),
    "info without version": _delete("info/version"),
    "v2 action name": _set("operations/verify.receive.sls-roster/action", "subscribe"),
    "operation without channel": _delete("operations/verify.receive.sls-roster/channel"),
    "unknown operation field": _set("operations/intake.send.sls-roster/publish", True),
    "kafka partitions not an integer": _set("channels/sls-roster/bindings/kafka/partitions", "ninety-six"),
    "kafka unknown binding version": _set("channels/sls-roster/bindings/kafka/bindingVersion", "9.9.9"),
    "kafka cleanup.policy not a list": _set("channels/sls-roster/bindings/kafka/topicConfiguration/cleanup.policy", "delete"),
    "kafka groupId not a schema": _set("operations/verify.receive.sls-roster/bindings/kafka/groupId", "regsosek-verify"),
    "kafka unknown message binding field": _set("components/messages/RosterSubmitted/bindings/kafka/partitionKey", "x"),
    "message headers not a schema": _set("components/messages/RosterSubmitted/headers", "ce_id"),
    "message example headers not an object": _set("components/messages/RosterSubmitted/examples", [{"headers": "x"}]),
    "server without protocol": _delete("servers/local/protocol"),
    "channel address not a string": _set("channels/sls-roster/address", 42),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_document_fails_validation(validator, doc, name):
    broken = copy.deepcopy(doc)
    assert not _errors(validator, broken)
    BROKEN[name](broken)
    assert _errors(validator, broken), f"the AsyncAPI schema accepted a document with: {name}"


def test_every_local_ref_resolves(doc):
    def refs(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    found = list(refs(doc))
    assert found
    for ref in found:
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
            node = node[part]


# --- faithful to the code -----------------------------------------------------------------


def test_every_registry_topic_is_a_channel_and_every_event_a_message(doc):
    assert list(doc["channels"]) == [s.name for s in specs()]
    messages = doc["components"]["messages"]
    for model, ce_type in EVENT_TYPES.items():
        assert model.__name__ in messages, f"no message for {model.__name__}"
        assert messages[model.__name__]["title"] == ce_type
    assert "DeadLetter" in messages
    assert len(messages) == len(EVENT_TYPES) + 1


def test_cloudevents_headers_are_the_envelope_headers(doc):
    """The documented header names are exactly those envelope.py writes (with a trace)."""
    model, sample = next(iter(asyncapi.samples().items()))
    env = new_envelope(model.model_validate(sample), source="/regsosek/intake", subject="s", trace=TRACE)
    names = {k for k, _ in env.headers()}
    assert set(doc["components"]["schemas"]["CloudEventsHeaders"]["properties"]) == names


@pytest.mark.parametrize("model", list(EVENT_TYPES), ids=lambda m: m.__name__)
def test_real_envelope_headers_and_sample_validate_against_the_message(doc, model):
    """What a producer really sends (new_envelope + the sample) matches the message's headers
    schema (exact ce_type, a producer's ce_source) and payload schema; a wrong type does not."""
    message = doc["components"]["messages"][model.__name__]
    sample = asyncapi.samples()[model]
    topic = next(s for s in specs() if s.contract == model.__name__)
    headers_schema = Draft202012Validator(_within(doc, message["headers"]), format_checker=Draft202012Validator.FORMAT_CHECKER)
    for producer in topic.producers:
        event = model.model_validate(sample)
        env = new_envelope(event, source=f"/regsosek/{producer}", subject=asyncapi.subject_of(event), trace=TRACE)
        headers = {k: v.decode() for k, v in env.headers()}
        assert not list(headers_schema.iter_errors(headers)), producer
        assert list(headers_schema.iter_errors({**headers, "ce_type": EVENT_TYPES[model] + "x"}))
        assert list(headers_schema.iter_errors({**headers, "ce_source": "/regsosek/somebody-else"}))
        missing_time = {k: v for k, v in headers.items() if k != "ce_time"}
        assert list(headers_schema.iter_errors(missing_time))
    for example in message["examples"]:
        assert not list(headers_schema.iter_errors(example["headers"]))
    payload = Draft202012Validator(_within(doc, message["payload"]), format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert not list(payload.iter_errors(sample))
    assert list(payload.iter_errors({**sample, "not_a_field": 1})), "producers refuse unknown fields"
    key = Draft202012Validator(message["bindings"]["kafka"]["key"])
    sls_id = sample["location"]["sls_id"] if "location" in sample else sample["sls_id"]
    assert not list(key.iter_errors(sls_id))
    assert list(key.iter_errors("６４７２０１０００１０００１"))  # fullwidth digits are not an SLS id


@pytest.mark.parametrize("model", list(EVENT_TYPES), ids=lambda m: m.__name__)
def test_committed_sample_validates_against_its_schema_and_model(model):
    name = asyncapi.event_name(model)
    schema = json.loads((SCHEMAS_DIR / f"{name}.json").read_text())
    sample = json.loads((SCHEMAS_DIR / "samples" / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    errors = list(Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).iter_errors(sample))
    assert not errors, [e.message for e in errors]
    model.model_validate(sample)


def test_samples_use_the_worked_example_where_one_exists():
    from regsosek.contracts import (
        FamilyInterview,
        InterviewSubmitted,
        InterviewVerified,
        household_profile,
        pseudonymise_interview,
    )
    from regsosek.examples import FAMILY_INTERVIEW
    from regsosek.pseudonyms import DEVELOPMENT_NIK_HASH_KEY

    s = asyncapi.samples()
    iv = FamilyInterview.model_validate(FAMILY_INTERVIEW)
    assert s[InterviewSubmitted] == pseudonymise_interview(iv, DEVELOPMENT_NIK_HASH_KEY).model_dump(mode="json")
    assert s[InterviewVerified]["profile"] == household_profile(iv).model_dump(mode="json")


def test_dead_letter_headers_are_those_the_consumer_adds(doc):
    consumer = EventConsumer(ServiceSettings(service_name="verify"), lambda: None, {}, [], RelayWakeup())
    outbox = Outbox("/regsosek/verify")
    record = SimpleNamespace(topic="sls-roster", partition=3, offset=42, key=b"64720100010001", value=b"{",
                             headers=[("ce_id", b"x")])
    consumer._dead_letter(outbox, record, "invalid body")
    added = {k for k, _ in outbox.pending[0].headers} - {"ce_id"}
    schema = doc["components"]["schemas"]["DeadLetterHeaders"]
    assert set(schema["required"]) == added == set(schema["properties"])
    headers = {k: v.decode() for k, v in outbox.pending[0].headers}
    assert not list(Draft202012Validator(schema).iter_errors(headers))


def test_operations_follow_the_registry(doc):
    ops = doc["operations"]
    expected = set()
    for s in specs():
        expected |= {f"{p}.send.{s.name}" for p in s.producers}
        expected |= {f"{c}.receive.{s.name}" for c in s.consumers}
    assert set(ops) == expected
    for op_id, op in ops.items():
        service, action, channel = op_id.split(".", 2)
        assert op["action"] == action and op["channel"] == {"$ref": f"#/channels/{channel}"}
        assert op["tags"] == [{"name": service}]
        if action == "receive":
            group = op["bindings"]["kafka"]["groupId"]["const"]
            assert group == ServiceSettings(service_name=service).consumer_group


def test_topic_prefix_reaches_addresses_and_groups():
    d = asyncapi.document(prefix="run7.")
    assert all(c["address"] == "run7." + name for name, c in d["channels"].items())
    assert d["operations"]["verify.receive.sls-roster"]["bindings"]["kafka"]["groupId"]["const"] == "run7.regsosek-verify"


def test_a_contract_named_in_the_registry_must_exist():
    spec = next(s for s in specs() if s.contract)
    bogus = type(spec)(**{**spec.__dict__, "contract": "NoSuchContract"})
    with pytest.raises(ValueError, match="NoSuchContract"):
        asyncapi.contract_of(bogus)


# --- served by every service ------------------------------------------------------------------


def test_route_serves_the_document_with_the_service_prefix():
    app = FastAPI()
    app.include_router(asyncapi.router)
    app.state.runtime = SimpleNamespace(settings=SimpleNamespace(topic_prefix="p1."))
    client = TestClient(app)
    r = client.get("/asyncapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == json.loads(json.dumps(asyncapi.document(prefix="p1.")))
    y = client.get("/asyncapi.yaml")
    assert y.status_code == 200 and yaml.safe_load(y.text) == r.json()


def test_every_service_app_includes_the_route():
    """build_app wires the router: checked on a real service app (its lifespan, which needs
    the database and broker, is not started)."""
    from intake.app import create_app
    from intake.settings import IntakeSettings

    client = TestClient(create_app(IntakeSettings()))
    r = client.get("/asyncapi.json")
    assert r.status_code == 200
    assert r.json()["asyncapi"] == "3.0.0"
