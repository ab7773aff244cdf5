"""A check for the OpenAPI fuzz runs (test_api_fuzz.py), loaded by the fuzzer as its hooks module
(SCHEMATHESIS_HOOKS=api_fuzz_checks): an error answer (4xx) never repeats a value of the request
that it refuses.

The request's values are its body's, query's and path's strings and numbers of at least
`MIN_LENGTH` characters; a value the service's own OpenAPI document spells out (an enum member, a
field name, an example) is not the caller's and may be named. Shorter values are left out: a
refusal may well contain "0" or "true" by chance. A NIK (16 digits), a KK number, a name, an
address or a webhook secret are all longer."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import schemathesis

MIN_LENGTH = 8
# values a hooks module puts into every request that are not the caller's to keep (e.g. a registry's own id)
NOT_THE_CALLERS: set[str] = set()


def request_values(*parts: Any) -> Iterator[str]:
    """The strings and numbers in a request's parts (dict keys are field names, not values)."""
    for part in parts:
        if isinstance(part, str):
            yield part.strip()
        elif isinstance(part, dict):
            yield from request_values(*part.values())
        elif isinstance(part, list | tuple):
            yield from request_values(*part)
        elif isinstance(part, int | float) and not isinstance(part, bool):
            yield str(part)


def repeated_values(values: Iterable[str], answer: str, schema_text: str) -> list[str]:
    """The values (long enough, not in the schema) that `answer` repeats, as sent or JSON-escaped."""
    found = []
    for value in values:
        if len(value) < MIN_LENGTH or value in schema_text or value in NOT_THE_CALLERS:
            continue
        if value in answer or json.dumps(value)[1:-1] in answer:
            found.append(value)
    return found


_schema_texts: dict[int, str] = {}


def _schema_text(case) -> str:
    raw = case.operation.schema.raw_schema
    if id(raw) not in _schema_texts:
        _schema_texts[id(raw)] = json.dumps(raw)
    return _schema_texts[id(raw)]


@schemathesis.check
def no_request_value_in_errors(ctx, response, case):
    """A 4xx answer names fields and reasons, never the values it refused (they may be personal)."""
    if not 400 <= response.status_code < 500:
        return None
    parts = [p for p in (case.body, case.query, case.path_parameters) if p is not None and not isinstance(p, bytes)]
    repeated = repeated_values(request_values(*parts), response.text or "", _schema_text(case))
    if repeated:
        # the report shows the answer; say only how long the repeated values are
        raise AssertionError(f"{response.status_code} answer repeats {len(repeated)} request value(s) "
                             f"of {sorted({len(v) for v in repeated})} characters")
    return None
