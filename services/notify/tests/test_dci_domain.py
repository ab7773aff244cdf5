"""DCI Social Registry API, pure parts (notify.dci_domain): query translation, pagination and sorting,
envelope signing, records and notify envelopes; what they produce is validated against the vendored
specification (vendor/dci/social_api_v1.0.0.yaml, through tests/dci_spec.py)."""

from __future__ import annotations

import base64
import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from notify import dci_domain as dd
from notify.callbacks import err_answer
from notify.domain import OPTIONAL_FIELDS, REQUIRED_FIELDS, AccessRules, ProgrammeAccess

_spec_file = Path(__file__).resolve().parents[3] / "tests" / "dci_spec.py"
_s = importlib.util.spec_from_file_location("dci_spec", _spec_file)
dci_spec = importlib.util.module_from_spec(_s)
sys.modules.setdefault("dci_spec", dci_spec)
_s.loader.exec_module(dci_spec)

NOW = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
TOKEN = {"token_programmes": ("pkh", "sembako"), "token_areas": ("6472",)}
ALL_FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)
ACCESS = AccessRules("t", {p: ProgrammeAccess(p, "law", ALL_FIELDS) for p in ("pkh", "sembako", "pbi_jkn")})


def crit(query_type, query, **more) -> dict:
    return {"query_type": query_type, "query": query, **more}


def expr(q: dict) -> dict:
    return crit("expression", {"type": "ns:org:QueryType:expression", "value": {"expression": {"collection": "Group",
                                                                                                "query": q}}})


def rejected(criteria, code: str, **token) -> str:
    with pytest.raises(dd.Rejected) as e:
        dd.parse_criteria(criteria, **{**TOKEN, **token})
    assert e.value.code == code
    return e.value.message


# ---------------------------------------------------------------- query translation


def test_idtype_value_is_a_family_id_lookup():
    c = dd.parse_criteria(crit("idtype-value", {"type": "family_id", "value": "6472010001000100-0001-001"}), **TOKEN)
    assert c.conditions == (dd.Condition("family_id", "eq", "6472010001000100-0001-001"),)
    assert (c.page_size, c.page_number, c.sort) == (dd.DEFAULT_PAGE_SIZE, 1, (("family_id", "asc"),))


@pytest.mark.parametrize("id_type", ["NIK", "UIN", "ns:org:IdType:NationalID"])
def test_a_requester_without_member_identifiers_cannot_search_by_a_persons_identifier(id_type):
    why = rejected(crit("idtype-value", {"type": id_type, "value": "3171000000000001"}), "rjct.search_criteria.invalid")
    assert ("NIK identifies a person" in why) if id_type == "NIK" else ("a member is searched by NIK only" in why)
    assert "3171000000000001" not in why


def test_a_requester_granted_member_identifiers_searches_by_nik_and_only_its_keyed_hash_goes_on():
    lookup = {"3171000000000001": "ab" * 32}.__getitem__
    c = dd.parse_criteria(crit("idtype-value", {"type": "NIK", "value": "3171000000000001"}), **TOKEN,
                          nik_lookup=lookup)
    assert c.conditions == (dd.Condition(dd.MEMBER_NIK, "eq", "ab" * 32),)
    for bad in ("３１７１000000000001", "317100000000001", 3171000000000001):  # fullwidth, short, not a string
        why = rejected(crit("idtype-value", {"type": "NIK", "value": bad}), "rjct.search_criteria.invalid",
                       nik_lookup=lookup)
        assert "16 ASCII digits" in why and str(bad) not in why


def test_expression_and_of_area_group_decile_programme():
    c = dd.parse_criteria(expr({"$and": [{"area_code": {"$eq": "6472010"}}, {"welfare_group": {"$le": 2}},
                                         {"decile": {"$in": [1, 2, 3]}}, {"eligible_programme": "pkh"}]}), **TOKEN)
    assert c.conditions == (dd.Condition("area_code", "eq", "6472010"), dd.Condition("welfare_group", "le", 2),
                            dd.Condition("decile", "in", (1, 2, 3)), dd.Condition("eligible_programme", "eq", "pkh"))


def test_predicate_list_with_and():
    c = dd.parse_criteria(crit("predicate", [
        {"seq_num": 2, "expression1": {"attribute_name": "decile", "operator": "lt", "attribute_value": "4"}},
        {"seq_num": 1, "expression1": {"attribute_name": "area_code", "operator": "in", "attribute_value": ["6472"]},
         "condition": "and", "expression2": {"attribute_name": "welfare_group", "operator": "eq", "attribute_value": 1}},
    ]), **TOKEN)
    assert c.conditions == (dd.Condition("area_code", "in", ("6472",)), dd.Condition("welfare_group", "eq", 1),
                            dd.Condition("decile", "lt", 4))



def test_expression_or_nor_and_not():
    c = dd.parse_criteria(expr({"$or": [{"decile": {"$le": 2}}, {"welfare_group": 1, "area_code": "6472010"}],
                                "$nor": [{"eligible_programme": "sembako"}],
                                "decile": {"$not": {"$in": ["7", "8"]}}}), **TOKEN)
    D = dd.Condition
    assert c.conditions == (
        dd.AnyOf((D("decile", "le", 2), dd.AllOf((D("welfare_group", "eq", 1), D("area_code", "eq", "6472010"))))),
        dd.Negation(dd.AnyOf((D("eligible_programme", "eq", "sembako"),))),
        dd.Negation(D("decile", "in", (7, 8))))


def test_predicate_or_and_not():
    def e(a, op, v):
        return {"attribute_name": a, "operator": op, "attribute_value": v}
    c = dd.parse_criteria(crit("predicate", [
        {"seq_num": 1, "expression1": e("decile", "eq", "1"), "condition": "or", "expression2": e("decile", "eq", "9")},
        {"seq_num": 2, "expression1": e("welfare_group", "le", "2"), "condition": "not",
         "expression2": e("eligible_programme", "eq", "pkh")},
        {"seq_num": 3, "condition": "not", "expression1": e("area_code", "eq", "6472010")},
    ]), **TOKEN)
    D = dd.Condition
    assert c.conditions == (dd.AnyOf((D("decile", "eq", 1), D("decile", "eq", 9))), D("welfare_group", "le", 2),
                            dd.Negation(D("eligible_programme", "eq", "pkh")), dd.Negation(D("area_code", "eq", "6472010")))


@pytest.mark.parametrize("query, holds_for", [
    ({"$or": [{"decile": 1}, {"decile": 3}]}, {1, 3}),
    ({"$nor": [{"decile": {"$lt": 3}}, {"decile": {"$gt": 4}}]}, {3, 4}),
    ({"decile": {"$not": {"$in": ["2", "3"]}}}, {1, 4, 5}),
    ({"$and": [{"decile": {"$ge": 2}}], "$or": [{"decile": {"$not": {"$eq": "2"}}}, {"welfare_group": 1}]}, {3, 4, 5}),
])
def test_or_and_not_mean_what_they_say(query, holds_for):
    c = dd.parse_criteria(expr(query), **TOKEN)

    def meets(decile: int, x: dd.Condition) -> bool:  # families of welfare group 2, deciles 1 to 5
        v = decile if x.attribute == "decile" else 2
        if x.op == "in":
            return v in x.value
        return {"eq": v == x.value, "lt": v < x.value, "le": v <= x.value, "gt": v > x.value,
                "ge": v >= x.value}[x.op]

    found = {d for d in range(1, 6) if all(dd.holds(t, lambda x, d=d: meets(d, x)) for t in c.conditions)}
    assert found == holds_for


def test_scope_applies_inside_or_and_not():
    assert "not among your token's programmes" in rejected(
        expr({"$or": [{"decile": 1}, {"eligible_programme": {"$not": {"$eq": "pbi_jkn"}}}]}),
        "rjct.search_criteria.invalid")


@pytest.mark.parametrize("criteria, needle", [
    (crit("predicate", [{"expression1": {"attribute_name": "decile", "operator": "eq", "attribute_value": 1},
                         "condition": "xor",
                         "expression2": {"attribute_name": "decile", "operator": "eq", "attribute_value": 2}}]),
     "and, or or not"),
    (crit("predicate", [{"expression1": {"attribute_name": "decile", "operator": "eq", "attribute_value": 1},
                         "condition": "or"}]), "expression2: required with condition or"),
    (expr({"income": {"$lt": 5}}), "the attribute is not searchable"),
    (expr({"welfare_group": {"$eq": 5}}), "integer from 1 to 4"),
    (expr({"decile": {"$eq": True}}), "integer from 1 to 10"),
    (expr({"area_code": {"$eq": "64a"}}), "SLS id prefix"),
    (expr({"area_code": {"$lt": "64"}}), "takes the operators eq, in"),
    (expr({"$where": [{"decile": 1}]}), "$and, $or and $nor combine conditions"),
    (expr({"$or": []}), "$or: a non-empty list of objects"),
    (expr({"decile": {"$not": 3}}), "$not: an object of operators"),
    (expr({"decile": {"$regex": "1"}}), "and $not"),
    (expr({"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"decile": 1}]}]}]}]}]}]}), "nested deeper"),
    (crit("graphql", {}), "query_type"),
    (crit("expression", {"value": {}}), "needs a query object"),
    ({"query_type": "idtype-value", "query": {"type": "family_id", "value": "x"}, "response_entity": "Member"},
     "members are not returned"),
])
def test_unsupported_queries_are_rejected_with_the_field(criteria, needle):
    assert needle in rejected(criteria, "rjct.search_criteria.invalid")


def test_scope_of_the_token_bounds_the_query():
    assert "not among your token's programmes" in rejected(expr({"eligible_programme": "pbi_jkn"}),
                                                           "rjct.search_criteria.invalid")
    assert "outside your token's areas" in rejected(expr({"area_code": "31"}), "rjct.search_criteria.invalid")
    # wider than the token's area is allowed (results stay within the token's areas), narrower too
    dd.parse_criteria(expr({"area_code": "64"}), **TOKEN)
    dd.parse_criteria(expr({"area_code": "64720100010001"}), **TOKEN)


# ---------------------------------------------------------------- pagination, sorting, locale


def test_pagination_counts_from_one():
    c = dd.parse_criteria({**expr({"decile": 1}), "pagination": {"page_size": 25, "page_number": 3}}, **TOKEN)
    assert (c.page_size, c.page_number, c.offset) == (25, 3, 50)
    c = dd.parse_criteria({**expr({"decile": 1}), "pagination": {"page_size": 10}}, **TOKEN)
    assert (c.page_number, c.offset) == (1, 0)


@pytest.mark.parametrize("p", [{"page_size": 0}, {"page_size": dd.MAX_PAGE_SIZE + 1}, {"page_size": 10, "page_number": 0},
                               {"page_number": 2}, {"page_size": 1.5}, {"page_size": "10"}, []])
def test_bad_pagination(p):
    rejected({**expr({"decile": 1}), "pagination": p}, "rjct.pagination.invalid")


def test_sort_always_ends_in_a_total_order():
    c = dd.parse_criteria({**expr({"decile": 1}), "sort": [{"attribute_name": "decile", "sort_order": "desc"}]}, **TOKEN)
    assert c.sort == (("decile", "desc"), ("family_id", "asc"))
    rejected({**expr({"decile": 1}), "sort": [{"attribute_name": "nik"}]}, "rjct.sort.invalid")
    rejected({**expr({"decile": 1}), "sort": [{"attribute_name": "decile", "sort_order": "up"}]}, "rjct.sort.invalid")


def test_locale_is_iso_639_3():
    assert dd.parse_criteria(expr({"decile": 1}), locale="ind", **TOKEN).locale == "ind"
    with pytest.raises(dd.Rejected):
        dd.parse_criteria(expr({"decile": 1}), locale="id", **TOKEN)


# ---------------------------------------------------------------- envelope


def envelope(action="search", **header) -> dict:
    return {"header": {"version": "1.0.0", "message_id": "m-1", "message_ts": NOW.isoformat(), "action": action,
                       "sender_id": "pkh-mis", "total_count": 1, **header},
            "message": {"transaction_id": "t-1", "search_request": [
                {"reference_id": "r-1", "timestamp": NOW.isoformat(), "search_criteria": expr({"decile": 1})}]}}


def test_signature_round_trip_and_tampering():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    env = envelope()
    sig = dd.sign_envelope(key, "pkh-mis", env["header"], env["message"])
    assert dd.verify_envelope(key.public_key(), sig, env["header"], env["message"])
    dci_spec.request("/registry/sync/search", {"signature": sig, **env})
    # key order does not matter (canonical JSON), content does
    assert dd.verify_envelope(key.public_key(), sig, dict(reversed(env["header"].items())), env["message"])
    assert not dd.verify_envelope(other.public_key(), sig, env["header"], env["message"])
    assert not dd.verify_envelope(key.public_key(), sig, {**env["header"], "total_count": 2}, env["message"])
    assert not dd.verify_envelope(key.public_key(), sig, env["header"], {**env["message"], "transaction_id": "t-2"})
    assert not dd.verify_envelope(key.public_key(), "garbage", env["header"], env["message"])
    assert not dd.verify_envelope(key.public_key(), sig.replace("ed25519", "rsa"), env["header"], env["message"])


@pytest.mark.parametrize("mutate, code, needle", [
    (lambda b: b.pop("header"), "err.request.bad", "header"),
    (lambda b: b["header"].pop("message_ts"), "err.request.bad", "header.message_ts"),
    (lambda b: b["header"].update(message_ts="yesterday"), "err.request.bad", "header.message_ts"),
    (lambda b: b["header"].update(action="subscribe"), "err.request.bad", "header.action"),
    (lambda b: b["header"].update(version="2.0.0"), "err.version.not_supported", "header.version"),
    (lambda b: b["header"].update(total_count="1"), "err.request.bad", "header.total_count"),
    (lambda b: b["header"].update(is_msg_encrypted="yes"), "err.encryption.invalid", "is_msg_encrypted"),
    (lambda b: b.update(message=[]), "err.request.bad", "message"),
])
def test_malformed_envelopes(mutate, code, needle):
    body = envelope()
    mutate(body)
    with pytest.raises(dd.DciError) as e:
        dd.check_envelope(body, "search")
    assert e.value.code == code and needle in e.value.message
    dci_spec.response("/registry/search", 400, dd.err_ack(e.value, "c-1", NOW))


def test_items_need_distinct_reference_ids():
    m = envelope()["message"]
    m["search_request"].append(dict(m["search_request"][0]))
    with pytest.raises(dd.DciError, match="distinct"):
        dd.items_of(m, "search_request")
    with pytest.raises(dd.DciError, match="1 to"):
        dd.items_of({"transaction_id": "t", "search_request": []}, "search_request")


def test_requester_registry():
    key = Ed25519PrivateKey.generate()
    x = base64.urlsafe_b64encode(key.public_key().public_bytes_raw()).rstrip(b"=").decode()
    reg = dd.parse_requesters({"requesters": {"pkh-mis": {"subject": "PKH-MIS", "public_key": x}}})
    assert reg["pkh-mis"].subject == "PKH-MIS"
    with pytest.raises(ValueError, match="public_key"):
        dd.parse_requesters({"requesters": {"pkh-mis": {"subject": "PKH-MIS", "public_key": "short"}}})
    with pytest.raises(ValueError, match="subject"):
        dd.parse_requesters({"requesters": {"pkh-mis": {"public_key": x}}})
    assert dd.parse_requesters({"requesters": {}}) == {}


# ---------------------------------------------------------------- records, answers, notify envelopes


DECISION = {"family_id": "64720100010001-0001-001", "sls_id": "64720100010001", "submission_id": "s", "version": 2,
            "decision_seq": 7, "decided_at": NOW.isoformat(), "welfare_group": 1, "decile": 2, "model_version": "m",
            "rule_version": "r", "decisions": [
                {"programme": "pkh", "eligible": True, "rule_version": "r", "reasons": ["a"]},
                {"programme": "pbi_jkn", "eligible": True, "rule_version": "r", "reasons": ["health reason"]}]}


def test_records_carry_only_the_requesters_programmes_and_no_member_ids():
    rec = dd.record_of(DECISION, ("pkh",), ACCESS)
    assert [d["programme"] for d in rec["programme_decisions"]] == ["pkh"]
    assert "health reason" not in str(rec)
    assert rec["group_identifier"] == [{"@type": "Identifier", "identifier_type": "family_id",
                                        "identifier_value": DECISION["family_id"]}]
    assert "member_list" not in rec and "nik" not in str(rec).lower()


def test_sync_search_answer_is_valid():
    key = Ed25519PrivateKey.generate()
    c = dd.parse_criteria({**expr({"decile": 2}), "pagination": {"page_size": 1, "page_number": 2}}, **TOKEN)
    items = [dd.search_item("r-1", NOW, c, [dd.record_of(DECISION, ("pkh",), ACCESS)], 5),
             dd.rejected_item("r-2", NOW, dd.Rejected("rjct.sort.invalid", "sort[0]: no"))]
    assert items[0]["pagination"] == {"page_size": 1, "page_number": 2, "total_count": 5}
    header = dd.callback_header("on-search", message_id="m", now=NOW, sender_id="regsosek", receiver_id="pkh-mis",
                                total_count=2, completed_count=2)
    message = {"transaction_id": "t", "correlation_id": "c", "search_response": items}
    body = {"signature": dd.sign_envelope(key, "k", header, message), "header": header, "message": message}
    dci_spec.response("/registry/sync/search", 200, body)
    dci_spec.request("/registry/on-search", body)
    assert dd.verify_envelope(key.public_key(), body["signature"], header, message)


def test_notify_body_is_a_valid_signed_notify_request():
    key = SimpleNamespace(key=Ed25519PrivateKey.generate(), kid="k1")
    payload = {"event_id": "e-1", "event_type": "eligibility-decided", "subject": DECISION["family_id"],
               "time": NOW.isoformat(), "data": {k: v for k, v in DECISION.items() if k != "decisions"} | {
                   "decisions": DECISION["decisions"][:1]}}
    body = dd.notify_body(key, message_id="m", now=NOW, sender_id="regsosek", receiver_id="pkh-mis",
                          transaction_id="t", payloads=[payload])
    dci_spec.request("/registry/notify", body)
    assert body["message"]["notify_event"][0]["reference_id"] == "e-1"
    assert dd.verify_envelope(key.key.public_key(), body["signature"], body["header"], body["message"])


def test_subscription_filters():
    f = dd.subscription_filters({"notify_record_type": "Group", "filter_type": "predicate", "filter": [
        {"expression1": {"attribute_name": "area_code", "operator": "in", "attribute_value": ["6472010", "6472020"]},
         "condition": "and",
         "expression2": {"attribute_name": "welfare_group", "operator": "le", "attribute_value": 2}},
        {"expression1": {"attribute_name": "eligible_programme", "operator": "eq", "attribute_value": "pkh"}}]})
    assert (f.area_prefixes, f.welfare_groups, f.programmes) == (("6472010", "6472020"), (1, 2), ("pkh",))
    with pytest.raises(dd.Rejected) as e:
        dd.subscription_filters({"notify_record_type": "Group", "filter_type": "predicate", "filter": [
            {"expression1": {"attribute_name": "decile", "operator": "eq", "attribute_value": 1}}]})
    assert e.value.code == "rjct.notify_details.invalid"
    with pytest.raises(dd.Rejected) as e:  # a subscription's filter is a conjunction
        dd.subscription_filters({"notify_record_type": "Group", "filter_type": "predicate", "filter": [
            {"expression1": {"attribute_name": "area_code", "operator": "eq", "attribute_value": "6472010"},
             "condition": "or",
             "expression2": {"attribute_name": "welfare_group", "operator": "le", "attribute_value": 2}}]})
    assert e.value.code == "rjct.notify_details.invalid" and "and only" in e.value.message
    with pytest.raises(dd.Rejected) as e:
        dd.subscription_filters({"notify_record_type": "Member", "filter": []})
    assert e.value.code == "rjct.notify_types.invalid"


def test_an_err_answer_is_a_refusal_not_a_network_failure():
    assert err_answer(200, b'{"message":{"ack_status":"ERR","error":{"code":"err.signature.invalid",'
                            b'"message":"bad"}}}') == "ERR err.signature.invalid: bad"
    assert err_answer(200, b'{"message":{"ack_status":"ACK"}}') is None
    assert err_answer(500, b'{"message":{"ack_status":"ERR"}}') is None
    assert err_answer(200, b"not json") is None


# ---------------------------------------------------------------- encrypted messages


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_an_encrypted_message_round_trips_and_is_valid_against_the_spec():
    env = envelope(is_msg_encrypted=True)
    sealed = dd.encrypt_message(RSA_KEY.public_key(), env["message"])
    dci_spec.schema("EncryptedMessage", sealed)
    dci_spec.request("/registry/sync/search", {**env, "message": sealed})
    assert sealed["header"] == {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": dd.rsa_jwk(RSA_KEY.public_key())["kid"]}
    assert "search_request" not in str(sealed)
    assert dd.decrypt_message(RSA_KEY, sealed) == env["message"]


@pytest.mark.parametrize("mutate, needle", [
    (lambda m: m.update(tag=m["ciphertext"][:22]), "does not decrypt"),  # another 16 bytes
    (lambda m: m.update(ciphertext=("B" if m["ciphertext"][0] == "A" else "A") + m["ciphertext"][1:]),  # changed
     "does not decrypt"),
    (lambda m: m["header"].update(kid="someone-else"), "not this registry's encryption key"),
    (lambda m: m["header"].update(alg="RSA1_5"), "alg RSA-OAEP-256"),
    (lambda m: m.update(iv="!!"), "message.iv: base64url"),
    (lambda m: m.pop("header"), "an EncryptedMessage"),
])
def test_a_bad_encrypted_message_is_refused_with_why(mutate, needle):
    sealed = dd.encrypt_message(RSA_KEY.public_key(), {"transaction_id": "t"})
    mutate(sealed)
    with pytest.raises(dd.DciError) as e:
        dd.decrypt_message(RSA_KEY, sealed)
    assert e.value.code == "err.encryption.invalid" and needle in e.value.message


def test_a_message_for_another_key_does_not_decrypt():
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sealed = dd.encrypt_message(other.public_key(), {"transaction_id": "t"})
    sealed["header"]["kid"] = dd.rsa_jwk(RSA_KEY.public_key())["kid"]
    with pytest.raises(dd.DciError, match="does not decrypt"):
        dd.decrypt_message(RSA_KEY, sealed)


def test_requester_encryption_keys_are_rsa_jwks_of_2048_bits_or_more():
    x = base64.urlsafe_b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode()
    jwk = dd.rsa_jwk(RSA_KEY.public_key())
    (r,) = dd.parse_requesters({"requesters": {"a": {"subject": "A", "public_key": x, "encryption_key": jwk}}}).values()
    assert dd.rsa_jwk(r.encryption_key) == jwk
    small = dd.rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key())
    for bad, needle in ((small, "2048 bits"), ({"kty": "EC"}, "an RSA JWK")):
        with pytest.raises(ValueError, match=needle):
            dd.parse_requesters({"requesters": {"a": {"subject": "A", "public_key": x, "encryption_key": bad}}})

