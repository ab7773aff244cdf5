"""Validation against the vendored DCI Social Registry API (vendor/dci/social_api_v1.0.0.yaml) for the
tests of notify's /dci endpoints: every request and response they produce is checked with jsonschema
against the specification's own schemas (the path's request body, its responses, the callbacks)."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

SPEC_PATH = Path(__file__).resolve().parents[1] / "vendor" / "dci" / "social_api_v1.0.0.yaml"
URI = "urn:dci:social_api_v1.0.0"


@functools.cache
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(URI, Resource(contents=spec(), specification=DRAFT7))


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _validate(instance: object, pointer: str) -> None:
    errors = sorted(Draft7Validator({"$ref": f"{URI}#/{pointer}"}, registry=_registry()).iter_errors(instance),
                    key=lambda e: list(e.absolute_path))
    if errors:
        raise AssertionError("not valid against the DCI specification (" + pointer + "):\n" + "\n".join(
            f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:10]))


def request(path: str, body: object) -> None:
    """`path` as in the specification (/registry/sync/search): the JSON request body."""
    _validate(body, _pointer("paths", path, "post", "requestBody", "content", "application/json", "schema"))


def response(path: str, status: int, body: object) -> None:
    """The answer of `path` with HTTP `status`: its declared response, else the default one."""
    responses = spec()["paths"][path]["post"]["responses"]
    key = str(status) if str(status) in responses else "default"
    r = responses[key]
    if "$ref" in r:
        name = r["$ref"].rsplit("/", 1)[-1]
        _validate(body, _pointer("components", "responses", name, "content", "application/json", "schema"))
    else:
        _validate(body, _pointer("paths", path, "post", "responses", key, "content", "application/json", "schema"))


def schema(name: str, instance: object) -> None:
    _validate(instance, _pointer("components", "schemas", name))
