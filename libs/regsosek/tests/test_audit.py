"""Audit entries hold ids only: who, what, which object, when, from which request."""

from __future__ import annotations

import uuid

import pytest

from regsosek.audit import NotAuditable, entry, of_request
from regsosek.auth import Principal, Role

FAMILY = "64720100010001-0001-001"


def test_entry_shape():
    sub = uuid.uuid4()
    e = entry("SUP-7", "supervisor", "submission.read", "submission", sub, request_id="req-1", trace_id="ab" * 16,
              detail={"family_id": FAMILY, "rows": 3})
    assert (e.actor, e.role, e.action, e.object_type, e.object_id) == ("SUP-7", "supervisor", "submission.read",
                                                                      "submission", str(sub))
    assert (e.outcome, e.request_id, e.trace_id) == ("ok", "req-1", "ab" * 16)
    assert e.detail == {"family_id": FAMILY, "rows": 3}


@pytest.mark.parametrize("object_id", ["6472010505800001", "Budi Santoso", "a" * 200, "x;drop table"])
def test_no_nik_kk_or_free_text_as_object(object_id):
    with pytest.raises(NotAuditable):
        entry("SUP-7", "supervisor", "submission.read", "family", object_id)


@pytest.mark.parametrize("detail", [{"nik": "6472010505800001"}, {"name": "Budi Santoso"}, {"members": [1, 2]},
                                    {"Reason": "x"}])
def test_no_personal_values_in_detail(detail):
    with pytest.raises(NotAuditable):
        entry("SUP-7", "supervisor", "resolution.submit", "family", FAMILY, detail=detail)


@pytest.mark.parametrize("action", ["", "Read Journey", "submission read"])
def test_action_is_a_name(action):
    with pytest.raises(NotAuditable):
        entry("SUP-7", "supervisor", action, "family", FAMILY)


def test_of_request_without_request_makes_a_request_id_and_keeps_the_token_subject():
    p = Principal("OFC-1", Role.OFFICER, ("6472",))
    e = of_request(None, p, "submission.read", "submission", FAMILY)
    assert e.actor == "OFC-1" and e.role == "officer"
    assert e.request_id and len(e.request_id) == 32
