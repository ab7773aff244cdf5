"""The DCI Social Registry API (vendor/dci/social_api_v1.0.0.yaml), pure: request envelopes checked,
search criteria translated into conditions over notify's read model, Group records built from a
family's newest decision (narrowed with domain.payload_for), the envelope signature made and checked,
subscription filters translated into notify Filters. No I/O; SQL for the conditions is in store.py.

Status vocabulary (the specification's):
- transport and envelope problems: `DciError` with an `err.*` code of the spec's Error object;
- one search / subscribe item the registry will not run: `Rejected` with an `rjct.*` reason code,
  answered in that item (status rjct), the other items of the message still run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from notify.domain import AccessRules, Filters, payload_for

VERSION = "1.0.0"
REG_TYPE = "ns:regsosek:RegistryType:Social"
RECORD_TYPE = "Group"
FAMILY_ID_TYPE = "family_id"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_ITEMS = 10          # search / subscribe items in one message
MAX_CONDITIONS = 20     # conditions in one query
ID_MAX = 99             # transaction_id, reference_id, correlation_id, subscription codes (the spec's maxLength)

# attribute -> (operators, kind). kind: text (exact), area (SLS id prefix), int range, programme code.
ATTRIBUTES: dict[str, tuple[frozenset[str], str]] = {
    "family_id": (frozenset({"eq", "in"}), "text"),
    "sls_id": (frozenset({"eq", "in"}), "text"),
    "area_code": (frozenset({"eq", "in"}), "area"),
    "welfare_group": (frozenset({"eq", "in", "lt", "le", "gt", "ge"}), "welfare_group"),
    "decile": (frozenset({"eq", "in", "lt", "le", "gt", "ge"}), "decile"),
    "eligible_programme": (frozenset({"eq", "in"}), "programme"),
}
SORTABLE = ("family_id", "sls_id", "welfare_group", "decile", "decided_at")
MEMBER_ID_TYPES = frozenset({"nik", "uin", "nationalid", "national_id", "member_id"})
MEMBER_NIK_TYPE = "NIK"  # idtype-value type of a member search (requesters granted member identifiers)
MEMBER_NIK = "member_nik"  # the condition's attribute: its value is the NIK's keyed hash (hex), never the NIK
NikLookup = Callable[[str], str]  # a NIK -> its keyed hash in the member index (hex)
_RANGES = {"welfare_group": (1, 4), "decile": (1, 10)}
_MONGO_OPS = {"$eq": "eq", "$in": "in", "$lt": "lt", "$lte": "le", "$le": "le", "$gt": "gt", "$gte": "ge", "$ge": "ge"}
_AREA = re.compile(r"^[0-9]{2,14}$")
_LOCALE = re.compile(r"^[a-z]{3}$")


class DciError(Exception):
    """The whole message is refused: the spec's Error code (err.*), a message naming the field, and
    the spec's header status reason code (rjct.*) when it names the problem more precisely (the
    answer of a synchronous endpoint carries it)."""

    def __init__(self, code: str, message: str, status: int = 400, reason_code: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.reason_code = code, message[:999], status, reason_code


class Rejected(Exception):
    """One item is refused: the spec's status reason code (rjct.*) and why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message[:999]


@dataclass(frozen=True)
class Condition:
    attribute: str
    op: str
    value: Any  # str | int | tuple


@dataclass(frozen=True)
class AnyOf:
    """At least one of its parts holds (the spec's or: $or, predicate condition or)."""

    parts: tuple[Term, ...]


@dataclass(frozen=True)
class AllOf:
    """Every part holds (a branch of an or made of several conditions)."""

    parts: tuple[Term, ...]


@dataclass(frozen=True)
class Negation:
    """Its part does not hold (the spec's not: $not, $nor, predicate condition not)."""

    part: Term


Term = Condition | AnyOf | AllOf | Negation


def leaves(terms) -> list[Condition]:
    """The conditions a query is made of, whatever combines them."""
    out: list[Condition] = []
    for t in terms:
        if isinstance(t, Condition):
            out.append(t)
        elif isinstance(t, Negation):
            out += leaves((t.part,))
        else:
            out += leaves(t.parts)
    return out


def holds(term: Term, meets) -> bool:
    """Whether `term` holds for a record, `meets(condition)` telling each condition."""
    if isinstance(term, Condition):
        return meets(term)
    if isinstance(term, Negation):
        return not holds(term.part, meets)
    if isinstance(term, AnyOf):
        return any(holds(p, meets) for p in term.parts)
    return all(holds(p, meets) for p in term.parts)


@dataclass(frozen=True)
class Criteria:
    conditions: tuple[Term, ...]  # all of them hold
    sort: tuple[tuple[str, str], ...] = (("family_id", "asc"),)
    page_size: int = DEFAULT_PAGE_SIZE
    page_number: int = 1
    locale: str | None = None

    @property
    def offset(self) -> int:
        return (self.page_number - 1) * self.page_size


# ---------------------------------------------------------------- envelope


def check_envelope(body: object, action: str) -> tuple[dict, dict, str | None]:
    """(header, message, signature) of a request whose header.action must be `action`; DciError
    (err.request.bad and the field) when it is not a DCI envelope."""
    if not isinstance(body, dict):
        raise DciError("err.request.bad", "the body must be a JSON object with header and message")
    header, message, signature = body.get("header"), body.get("message"), body.get("signature")
    if not isinstance(header, dict):
        raise DciError("err.request.bad", "header: required, an object")
    for name in ("message_id", "message_ts", "action", "sender_id"):
        if not isinstance(header.get(name), str) or not header[name].strip():
            raise DciError("err.request.bad", f"header.{name}: required, a non-empty string")
    if len(header["message_id"]) > ID_MAX:
        raise DciError("err.request.bad", f"header.message_id: at most {ID_MAX} characters")
    if header.get("version", VERSION) != VERSION:
        raise DciError("err.version.not_supported", f"header.version: only {VERSION} is supported")
    if header["action"] != action:
        raise DciError("err.request.bad", f"header.action: must be {action} on this endpoint")
    if not isinstance(header.get("total_count"), int) or isinstance(header["total_count"], bool) or header["total_count"] < 0:
        raise DciError("err.request.bad", "header.total_count: required, a non-negative integer")
    if _timestamp(header["message_ts"]) is None:
        raise DciError("err.request.bad", "header.message_ts: must be an ISO 8601 date-time with a time zone")
    if not isinstance(header.get("is_msg_encrypted", False), bool):
        raise DciError("err.encryption.invalid", "header.is_msg_encrypted: true or false")
    if (uri := header.get("sender_uri")) is not None and (not isinstance(uri, str) or len(uri) > 2000):
        raise DciError("err.sender_uri.invalid", "header.sender_uri: must be a URL")
    if not isinstance(message, dict):
        raise DciError("err.request.bad", "message: required, an object")
    if signature is not None and not isinstance(signature, str):
        raise DciError("err.signature.invalid", "signature: must be a string")
    return header, message, signature


def check_message_ts(header: dict, now: datetime, window: timedelta) -> None:
    """Refuses a message whose message_ts is further than `window` from now, in the past (a stale or
    replayed message) or the future."""
    ts = _timestamp(header["message_ts"])
    if ts is None or abs(now - ts) > window:
        raise DciError("err.request.bad", f"header.message_ts: more than {window.total_seconds():g} s from the "
                                          "registry's clock (rjct.message_ts.invalid)", reason_code="rjct.message_ts.invalid")


def duplicate_message() -> DciError:
    return DciError("err.request.bad", "header.message_id: already received from this sender "
                                       "(rjct.message_id.duplicate)", status=409, reason_code="rjct.message_id.duplicate")


def _timestamp(v: object) -> datetime | None:
    if not isinstance(v, str):
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def id_field(obj: dict, name: str, where: str) -> str:
    v = obj.get(name)
    if not isinstance(v, str) or not v.strip() or len(v) > ID_MAX:
        raise DciError("err.request.bad", f"{where}.{name}: required, a string of 1 to {ID_MAX} characters")
    return v


def items_of(message: dict, name: str) -> list[dict]:
    """The items of a batch (search_request, subscribe_request), each with its reference_id."""
    id_field(message, "transaction_id", "message")
    items = message.get(name)
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise DciError("err.request.bad", f"message.{name}: required, a list of 1 to {MAX_ITEMS} items")
    refs = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise DciError("err.request.bad", f"message.{name}[{i}]: must be an object")
        refs.append(id_field(it, "reference_id", f"message.{name}[{i}]"))
    if len(set(refs)) != len(refs):
        raise DciError("err.request.bad", f"message.{name}: reference_id values must be distinct")
    return items


def canonical(header: dict, message: dict) -> bytes:
    """The bytes a signature covers: {"header": ..., "message": ...} as JSON with sorted keys, no
    whitespace, UTF-8 (non-ASCII kept as is)."""
    return json.dumps({"header": header, "message": message}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode()


def sign_envelope(key: Ed25519PrivateKey, kid: str, header: dict, message: dict) -> str:
    sig = base64.urlsafe_b64encode(key.sign(canonical(header, message))).rstrip(b"=").decode()
    return f'keyId="{kid}",algorithm="ed25519",signature="{sig}"'


_SIG = re.compile(r'^keyId="([^"]{1,200})",algorithm="ed25519",signature="([A-Za-z0-9_-]{80,100})"$')


def parse_signature(signature: str) -> tuple[str, bytes] | None:
    m = _SIG.match(signature.strip())
    if not m:
        return None
    try:
        raw = base64.urlsafe_b64decode(m.group(2) + "=" * (-len(m.group(2)) % 4))
    except (binascii.Error, ValueError):
        return None
    return (m.group(1), raw) if len(raw) == 64 else None


def verify_envelope(public_key: Ed25519PublicKey, signature: str, header: dict, message: dict) -> bool:
    parsed = parse_signature(signature)
    if parsed is None:
        return False
    try:
        public_key.verify(parsed[1], canonical(header, message))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class Requester:
    sender_id: str
    subject: str  # the bearer token's sub that may send as this sender_id
    public_key: Ed25519PublicKey
    encryption_key: RSAPublicKey | None = None  # encrypts answers and callbacks to it (RSA-OAEP-256)


# ---------------------------------------------------------------- encrypted messages (the spec's EncryptedMessage)
#
# An EncryptedMessage is a JWE (JSON Web Encryption) in the flattened JSON form whose only header is the
# unprotected `header` {alg, enc, kid}: key management RSA-OAEP-256, content A256GCM, no
# additional authenticated data (nothing is protected; the envelope's signature covers header and the
# encrypted message). Requests are encrypted to the registry's key (GET /dci/registry/encryption-keys),
# answers and callbacks to the requester's registered encryption key.

JWE_ALG, JWE_ENC = "RSA-OAEP-256", "A256GCM"
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(v: object, name: str) -> bytes:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", v):
        raise DciError("err.encryption.invalid", f"message.{name}: base64url")
    return base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))


def rsa_jwk(key: RSAPublicKey) -> dict:
    """The public key as a JWK with its JWK thumbprint (SHA-256) as kid."""
    numbers = key.public_numbers()
    n = _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
    e = _b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))
    kid = _b64(hashlib.sha256(json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":")).encode()).digest())
    return {"kty": "RSA", "n": n, "e": e, "kid": kid, "use": "enc", "alg": JWE_ALG}


def rsa_public_key(jwk: object) -> RSAPublicKey:
    """An RSA public key (2048 bits or more) from a JWK {kty: RSA, n, e}; ValueError otherwise."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
        raise ValueError("an RSA JWK (kty RSA, n, e)")
    try:
        n = int.from_bytes(_unb64(jwk.get("n"), "n"), "big")
        e = int.from_bytes(_unb64(jwk.get("e"), "e"), "big")
        key = rsa.RSAPublicNumbers(e, n).public_key()
    except (DciError, ValueError) as err:
        raise ValueError("an RSA JWK (kty RSA, n, e)") from err
    if key.key_size < 2048:
        raise ValueError("an RSA key of 2048 bits or more")
    return key


def encrypt_message(key: RSAPublicKey, message: dict) -> dict:
    """`message` as an EncryptedMessage to `key`."""
    cek, iv = os.urandom(32), os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, canonical_message(message), b"")
    return {"header": {"alg": JWE_ALG, "enc": JWE_ENC, "kid": rsa_jwk(key)["kid"]},
            "encrypted_key": _b64(key.encrypt(cek, _OAEP)), "iv": _b64(iv), "ciphertext": _b64(sealed[:-16]),
            "tag": _b64(sealed[-16:])}


def decrypt_message(key: RSAPrivateKey, encrypted: object) -> dict:
    """The message inside an EncryptedMessage made to `key`; DciError err.encryption.invalid and why."""
    code = "err.encryption.invalid"
    if not isinstance(encrypted, dict) or not isinstance(encrypted.get("header"), dict):
        raise DciError(code, "message: an EncryptedMessage (header, encrypted_key, iv, ciphertext, tag)")
    h = encrypted["header"]
    if (h.get("alg"), h.get("enc")) != (JWE_ALG, JWE_ENC):
        raise DciError(code, f"message.header: alg {JWE_ALG} and enc {JWE_ENC} only")
    if h.get("kid") != rsa_jwk(key.public_key())["kid"]:
        raise DciError(code, "message.header.kid: not this registry's encryption key (GET /dci/registry/encryption-keys)")
    iv, tag = _unb64(encrypted.get("iv"), "iv"), _unb64(encrypted.get("tag"), "tag")
    if len(iv) != 12 or len(tag) != 16:
        raise DciError(code, "message.iv / message.tag: 96-bit iv and 128-bit tag (A256GCM)")
    try:
        cek = key.decrypt(_unb64(encrypted.get("encrypted_key"), "encrypted_key"), _OAEP)
        plain = AESGCM(cek).decrypt(iv, _unb64(encrypted.get("ciphertext"), "ciphertext") + tag, b"")
        message = json.loads(plain)
    except (ValueError, InvalidTag, UnicodeDecodeError):
        raise DciError(code, "message: does not decrypt with this registry's key") from None
    if not isinstance(message, dict):
        raise DciError(code, "message: the decrypted message must be an object")
    return message


def canonical_message(message: dict) -> bytes:
    return json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def parse_requesters(doc: object) -> dict[str, Requester]:
    """The requester key registry (data/dci-requesters.yaml): sender_id -> token subject and the
    Ed25519 public key (base64url of its 32 bytes, the JWK `x`) that signs its requests."""
    if not isinstance(doc, dict) or not isinstance(doc.get("requesters", {}), dict):
        raise ValueError("DCI requesters file needs a requesters mapping")
    out = {}
    for sender, e in (doc.get("requesters") or {}).items():
        if not isinstance(sender, str) or not isinstance(e, dict) or not isinstance(e.get("subject"), str):
            raise ValueError(f"DCI requester {sender}: subject (the token's sub) is required")
        try:
            x = e["public_key"]
            raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
            key = Ed25519PublicKey.from_public_bytes(raw)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise ValueError(f"DCI requester {sender}: public_key must be base64url of an Ed25519 public key") from None
        encryption_key = None
        if "encryption_key" in e:
            try:
                encryption_key = rsa_public_key(e["encryption_key"])
            except ValueError as err:
                raise ValueError(f"DCI requester {sender}: encryption_key must be {err}") from None
        out[sender] = Requester(sender, e["subject"], key, encryption_key)
    return out


def ack(correlation_id: str, now: datetime) -> dict:
    return {"message": {"ack_status": "ACK", "timestamp": now.isoformat(), "correlation_id": correlation_id}}


def err_ack(e: DciError, correlation_id: str, now: datetime) -> dict:
    return {"message": {"ack_status": "ERR", "timestamp": now.isoformat(), "correlation_id": correlation_id,
                        "error": {"code": e.code, "message": e.message}}}


def http_error(code: str, message: str) -> dict:
    """The spec's HttpErrorResponse (401, 403)."""
    return {"errors": [{"code": code, "message": message[:999]}]}


def callback_header(action: str, *, message_id: str, now: datetime, sender_id: str, receiver_id: str,
                    total_count: int, completed_count: int, status: str = "succ",
                    reason_code: str | None = None, reason: str | None = None, encrypted: bool = False) -> dict:
    h = {"version": VERSION, "message_id": message_id, "message_ts": now.isoformat(), "action": action,
         "status": status, "total_count": total_count, "completed_count": completed_count,
         "sender_id": sender_id, "receiver_id": receiver_id, "is_msg_encrypted": encrypted}
    if reason_code:
        h["status_reason_code"] = reason_code
    if reason:
        h["status_reason_message"] = reason[:999]
    return h


# ---------------------------------------------------------------- search criteria


def parse_criteria(criteria: object, *, token_programmes: tuple[str, ...], token_areas: tuple[str, ...],
                   locale: object = None, nik_lookup: NikLookup | None = None) -> Criteria:
    """A search item's criteria as conditions; Rejected (rjct.search_criteria/sort/pagination.invalid
    and why) for what this registry does not answer. `nik_lookup` (the member index's keyed hash) is
    given only for a requester whose programmes are granted member identifiers: it alone may search
    by a member's NIK, and the NIK goes no further than this function (the condition holds its hash)."""
    if not isinstance(criteria, dict):
        raise Rejected("rjct.search_criteria.invalid", "search_criteria: required, an object")
    if criteria.get("version", VERSION) != VERSION:
        raise Rejected("rjct.search_criteria.invalid", f"search_criteria.version: only {VERSION}")
    if criteria.get("reg_type") not in (None, REG_TYPE):
        raise Rejected("rjct.search_criteria.invalid", f"search_criteria.reg_type: only {REG_TYPE}")
    if criteria.get("reg_record_type") not in (None, RECORD_TYPE) or criteria.get("response_entity") not in (None, RECORD_TYPE):
        raise Rejected("rjct.search_criteria.invalid", "search_criteria.response_entity: only Group (families); "
                                                       "members are not returned")
    conditions = conditions_of(criteria.get("query_type"), criteria.get("query"), "search_criteria",
                               "rjct.search_criteria.invalid", nik_lookup)
    check_scope(conditions, token_programmes, token_areas, "rjct.search_criteria.invalid")
    if locale is not None and (not isinstance(locale, str) or not _LOCALE.match(locale)):
        raise Rejected("rjct.search_criteria.invalid", "locale: an ISO 639-3 code (three lower-case letters)")
    return Criteria(conditions, _sort(criteria.get("sort")), *_pagination(criteria.get("pagination")), locale)


def conditions_of(query_type: object, query: object, where: str, code: str,
                  nik_lookup: NikLookup | None = None) -> tuple[Term, ...]:
    """The terms (all of which must hold) of an idtype-value, expression or predicate query; Rejected else."""
    conds: tuple[Term, ...]
    if query_type == "idtype-value":
        if not isinstance(query, dict) or not isinstance(query.get("type"), str):
            raise Rejected(code, f"{where}.query: idtype-value needs type and value")
        id_type = query["type"].rsplit(":", 1)[-1]
        if id_type.lower() in MEMBER_ID_TYPES:
            conds = (_member_condition(id_type, query.get("value"), f"{where}.query", code, nik_lookup),)
        elif id_type != FAMILY_ID_TYPE:
            raise Rejected(code, f"{where}.query.type: {FAMILY_ID_TYPE} (a family) or {MEMBER_NIK_TYPE} (a member)")
        else:
            conds = (_condition(FAMILY_ID_TYPE, "eq", query.get("value"), f"{where}.query.value", code),)
    elif query_type == "expression":
        value = query.get("value") if isinstance(query, dict) else None
        expression = value.get("expression") if isinstance(value, dict) else None
        if not isinstance(expression, dict) or not isinstance(expression.get("query"), dict):
            raise Rejected(code, f"{where}.query.value.expression: needs a query object")
        if expression.get("collection", RECORD_TYPE) != RECORD_TYPE:
            raise Rejected(code, f"{where}.query.value.expression.collection: only {RECORD_TYPE}")
        conds = tuple(_mongo(expression["query"], f"{where}.query.value.expression.query", code, 0))
    elif query_type == "predicate":
        if not isinstance(query, list) or not query:
            raise Rejected(code, f"{where}.query: predicate needs a non-empty list of expressions")
        conds = tuple(_predicates(query, f"{where}.query", code))
    else:
        raise Rejected(code, f"{where}.query_type: one of idtype-value, expression, predicate")
    if not conds or not 1 <= len(leaves(conds)) <= MAX_CONDITIONS:
        raise Rejected(code, f"{where}.query: 1 to {MAX_CONDITIONS} conditions")
    return conds


_MAX_DEPTH = 5  # nested $and / $or / $nor / $not
_NIK = re.compile(r"^[0-9]{16}$", re.ASCII)


def _member_condition(id_type: str, value: object, where: str, code: str, nik_lookup: NikLookup | None) -> Condition:
    """The family of a member with this NIK (MEMBER_NIK over the member index, by keyed hash)."""
    if id_type.lower() != MEMBER_NIK_TYPE.lower():
        raise Rejected(code, f"{where}.type: a member is searched by {MEMBER_NIK_TYPE} only")
    if nik_lookup is None:
        raise Rejected(code, f"{where}.type: {MEMBER_NIK_TYPE} identifies a person: only a search by a requester "
                             "whose programmes are granted member identifiers may use it")
    if not isinstance(value, str) or not _NIK.fullmatch(value):
        raise Rejected(code, f"{where}.value: a NIK is 16 ASCII digits")  # the value is never echoed
    return Condition(MEMBER_NIK, "eq", nik_lookup(value))


def _conjunction(terms: list[Term]) -> Term:
    return terms[0] if len(terms) == 1 else AllOf(tuple(terms))


def _mongo(q: dict, where: str, code: str, depth: int) -> list[Term]:
    """A MongoDB-style query object (the spec's expression example): fields with $eq, $in, $lt, $lte,
    $gt, $gte or $not of those; $and, $or and $nor of such objects. Every key holds (and)."""
    if depth > _MAX_DEPTH:
        raise Rejected(code, f"{where}: nested deeper than {_MAX_DEPTH} levels")
    if not q:
        raise Rejected(code, f"{where}: an empty query")
    out: list[Term] = []
    for key, spec in q.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(spec, list) or not spec or not all(isinstance(p, dict) for p in spec):
                raise Rejected(code, f"{where}.{key}: a non-empty list of objects")
            branches = [_mongo(p, f"{where}.{key}[{i}]", code, depth + 1) for i, p in enumerate(spec)]
            if key == "$and":
                out += [t for b in branches for t in b]
            else:
                either = AnyOf(tuple(_conjunction(b) for b in branches))
                out.append(either if key == "$or" else Negation(either))
        elif key.startswith("$"):
            raise Rejected(code, f"{where}.{key}: $and, $or and $nor combine conditions")
        else:
            out += _field(key, spec, f"{where}.{key}", code)
    return out


def _field(attr: str, spec: object, where: str, code: str) -> list[Term]:
    if not isinstance(spec, dict):
        spec = {"$eq": spec}
    if not spec:
        raise Rejected(code, f"{where}: an empty condition")
    out: list[Term] = []
    for op, v in spec.items():
        if op == "$not":
            if not isinstance(v, dict) or not v or "$not" in v:
                raise Rejected(code, f"{where}.$not: an object of operators")
            out.append(Negation(_conjunction(_field(attr, v, f"{where}.$not", code))))
        elif op in _MONGO_OPS:
            out.append(_condition(attr, _MONGO_OPS[op], v, f"{where}.{op}", code))
        else:
            raise Rejected(code, f"{where}.{op}: operators are {', '.join(sorted(_MONGO_OPS))} and $not")
    return out


def _predicates(items: list, where: str, code: str) -> list[Term]:
    """The predicate list, in seq_num order; every item holds (and). An item is expression1 alone,
    `not` expression1, or expression1 `and` / `or` / `and not` (condition not) expression2."""
    out: list[Term] = []
    ordered = sorted(enumerate(items), key=lambda p: (p[1].get("seq_num", 0) if isinstance(p[1], dict) else 0, p[0]))
    for i, p in ordered:
        w = f"{where}[{i}]"
        if not isinstance(p, dict):
            raise Rejected(code, f"{w}: an object")
        condition = p.get("condition")
        if condition not in (None, "and", "or", "not"):
            raise Rejected(code, f"{w}.condition: and, or or not")
        first = _expression(p.get("expression1"), f"{w}.expression1", code)
        if "expression2" not in p:
            if condition == "or":
                raise Rejected(code, f"{w}.expression2: required with condition or")
            out.append(Negation(first) if condition == "not" else first)
            continue
        second = _expression(p.get("expression2"), f"{w}.expression2", code)
        if condition in (None, "and"):
            out += [first, second]
        elif condition == "or":
            out.append(AnyOf((first, second)))
        else:
            out += [first, Negation(second)]  # expression1 and not expression2
    return out


def _expression(e: object, where: str, code: str) -> Condition:
    if not isinstance(e, dict):
        raise Rejected(code, f"{where}: required, an object")
    return _condition(e.get("attribute_name"), e.get("operator"), e.get("attribute_value"), where, code)


def _condition(attr: object, op: object, value: object, where: str, code: str) -> Condition:
    if not isinstance(attr, str) or attr not in ATTRIBUTES:
        raise Rejected(code, f"{where}: the attribute is not searchable; attributes are {', '.join(ATTRIBUTES)}")
    ops, kind = ATTRIBUTES[attr]
    if not isinstance(op, str) or op not in ops:
        raise Rejected(code, f"{where}: {attr} takes the operators {', '.join(sorted(ops))}")
    values = value if op == "in" else [value]
    if not isinstance(values, list) or not 1 <= len(values) <= 500:
        raise Rejected(code, f"{where}: in takes a list of 1 to 500 values")
    checked = tuple(_value(kind, v, attr, where, code) for v in values)
    return Condition(attr, op, checked if op == "in" else checked[0])


def _value(kind: str, v: object, attr: str, where: str, code: str):
    if kind in _RANGES:
        lo, hi = _RANGES[kind]
        if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 3:
            # the spec's attribute_value is oneOf string/integer/number, which an integer can never
            # satisfy (it is also a number): numerals as strings are the valid form
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v) or not lo <= v <= hi:
            raise Rejected(code, f"{where}: {attr} is an integer from {lo} to {hi}")
        return int(v)
    if not isinstance(v, str) or not v or len(v) > ID_MAX:
        raise Rejected(code, f"{where}: {attr} is a string")
    if kind == "area" and not _AREA.match(v):
        raise Rejected(code, f"{where}: area_code is an SLS id prefix of 2 to 14 digits "
                             "(province 2, regency 4, district 7, village 10, SLS 14)")
    return v


def check_scope(conditions: tuple[Term, ...], token_programmes: tuple[str, ...], token_areas: tuple[str, ...],
                code: str) -> None:
    """Refuses conditions naming a programme the token does not, or an area wholly outside its areas
    (results are bounded by the token's areas and programmes in any case)."""
    for c in leaves(conditions):
        values = c.value if isinstance(c.value, tuple) else (c.value,)
        if c.attribute == "eligible_programme":
            for v in values:
                if v not in token_programmes:
                    raise Rejected(code, f"eligible_programme {v} is not among your token's programmes")
        if c.attribute == "area_code":
            for v in values:
                if not any(v.startswith(a) or a.startswith(v) for a in token_areas):
                    raise Rejected(code, f"area_code {v} is outside your token's areas")


def _sort(sort: object) -> tuple[tuple[str, str], ...]:
    if sort is None:
        return (("family_id", "asc"),)
    if not isinstance(sort, list) or len(sort) > len(SORTABLE):
        raise Rejected("rjct.sort.invalid", f"sort: a list of at most {len(SORTABLE)} items")
    out = []
    for i, s in enumerate(sort):
        if not isinstance(s, dict) or s.get("attribute_name") not in SORTABLE:
            raise Rejected("rjct.sort.invalid", f"sort[{i}].attribute_name: one of {', '.join(SORTABLE)}")
        order = s.get("sort_order", "asc")
        if order not in ("asc", "desc"):
            raise Rejected("rjct.sort.invalid", f"sort[{i}].sort_order: asc or desc")
        out.append((s["attribute_name"], order))
    if not any(a == "family_id" for a, _ in out):
        out.append(("family_id", "asc"))  # a total order: pages neither repeat nor skip a family
    return tuple(out)


def _pagination(p: object) -> tuple[int, int]:
    if p is None:
        return DEFAULT_PAGE_SIZE, 1
    if not isinstance(p, dict):
        raise Rejected("rjct.pagination.invalid", "pagination: an object with page_size and page_number")
    size, number = p.get("page_size"), p.get("page_number", 1)
    for name, v, hi in (("page_size", size, MAX_PAGE_SIZE), ("page_number", number, 10_000_000)):
        if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v) or not 1 <= v <= hi:
            raise Rejected("rjct.pagination.invalid", f"pagination.{name}: an integer from 1 to {hi} (pages count from 1)")
    assert isinstance(size, int | float) and isinstance(number, int | float)  # checked just above
    return int(size), int(number)


# ---------------------------------------------------------------- records


def group_record(narrowed: dict) -> dict:
    """A family as the spec's Group record, from its decision narrowed for the requester (payload_for):
    the family id as its identifier; for a requester granted member identifiers, its programmes'
    member-level decisions, each member named by form row and (when notify.domain.with_niks put it in)
    NIK as a member identifier."""
    rec: dict[str, Any] = {
        "@type": "spdci:Group",
        "group_identifier": [{"@type": "Identifier", "identifier_type": FAMILY_ID_TYPE,
                              "identifier_value": narrowed["family_id"]}],
        "group_type": "family",
        "sls_id": narrowed["sls_id"],
        "last_updated": narrowed["decided_at"],
    }
    for f in ("welfare_group", "decile", "decision_seq", "version", "model_version", "rule_version"):
        if f in narrowed:
            rec[f] = narrowed[f]
    rec["programme_decisions"] = [{"programme": d["programme"], "eligible": d["eligible"],
                                   "rule_version": d.get("rule_version"), "reasons": d.get("reasons", [])}
                                  for d in narrowed.get("decisions", [])]
    if narrowed.get("member_decisions"):
        rec["member_decisions"] = [_member_record(m) for m in narrowed["member_decisions"]]
    return rec


def _member_record(m: dict) -> dict:
    ids = [{"@type": "Identifier", "identifier_type": MEMBER_NIK_TYPE, "identifier_value": m["nik"]}] if m.get("nik") else []
    return {"line_no": m["line_no"], "member_identifier": ids, "programme": m["programme"], "eligible": m["eligible"],
            "rule_version": m.get("rule_version"), "reasons": m.get("reasons", [])}


def record_of(decision: dict, programmes: tuple[str, ...], access: AccessRules) -> dict:
    return group_record(payload_for(decision, programmes, access))


def search_item(reference_id: str, now: datetime, criteria: Criteria, records: list[dict], total: int) -> dict:
    item = {"reference_id": reference_id, "timestamp": now.isoformat(), "status": "succ",
            "data": {"version": VERSION, "reg_type": REG_TYPE, "reg_record_type": RECORD_TYPE, "reg_records": records},
            "pagination": {"page_size": criteria.page_size, "page_number": criteria.page_number, "total_count": total}}
    if criteria.locale:
        item["locale"] = criteria.locale
    return item


def families_in(message: dict) -> list[str]:
    """The family ids of the records of an on-search message."""
    return [r["group_identifier"][0]["identifier_value"] for it in message.get("search_response", [])
            for r in (it.get("data") or {}).get("reg_records", [])]


def without_families(message: dict, erased: set[str]) -> dict:
    """An on-search message without the records of `erased` families (erased after the search ran, before
    its callback was sent); each item's total_count lessened by the records taken out."""
    items = []
    for it in message.get("search_response", []):
        records = (it.get("data") or {}).get("reg_records")
        if records is None:
            items.append(it)
            continue
        kept = [r for r in records if r["group_identifier"][0]["identifier_value"] not in erased]
        item = {**it, "data": {**it["data"], "reg_records": kept}}
        if "pagination" in it:
            item["pagination"] = {**it["pagination"],
                                  "total_count": max(0, it["pagination"]["total_count"] - (len(records) - len(kept)))}
        items.append(item)
    return {**message, "search_response": items}


def rejected_item(reference_id: str, now: datetime, r: Rejected) -> dict:
    return {"reference_id": reference_id, "timestamp": now.isoformat(), "status": "rjct",
            "status_reason_code": r.code, "status_reason_message": r.message}


def notify_event(payload: dict) -> dict:
    """One queued webhook payload (event_id, time, data narrowed at enqueue) as a NotifyEventRequest item."""
    return {"reference_id": payload["event_id"], "timestamp": payload["time"],
            "data": {"version": VERSION, "reg_type": REG_TYPE, "reg_event_type": "REGISTER",
                     "reg_record_type": RECORD_TYPE, "reg_records": group_record(payload["data"])}}


# ---------------------------------------------------------------- subscriptions


def subscription_filters(criteria: object) -> Filters:
    """A subscribe item's filter as notify Filters (area_code, welfare_group, eligible_programme);
    Rejected (rjct.notify_details.invalid) for anything else. The caller narrows it to the token."""
    code = "rjct.notify_details.invalid"
    if not isinstance(criteria, dict):
        raise Rejected(code, "subscribe_criteria: required, an object")
    if criteria.get("notify_record_type") not in (RECORD_TYPE, "spdci:Group"):
        raise Rejected("rjct.notify_types.invalid", f"subscribe_criteria.notify_record_type: only {RECORD_TYPE}")
    conds = conditions_of(criteria.get("filter_type", "predicate"), criteria.get("filter"), "subscribe_criteria", code)
    areas: list[str] = []
    groups: set[int] | None = None
    programmes: list[str] = []
    for c in conds:
        if not isinstance(c, Condition):
            raise Rejected(code, "subscribe_criteria.filter: conditions joined by and only (or and not are for "
                                 "searches; in takes several values)")
        values = c.value if isinstance(c.value, tuple) else (c.value,)
        if c.attribute == "area_code":
            if areas:
                raise Rejected(code, "area_code: one condition (use in for several areas)")
            areas = list(values)
        elif c.attribute == "eligible_programme":
            if programmes:
                raise Rejected(code, "eligible_programme: one condition (use in for several)")
            programmes = list(values)
        elif c.attribute == "welfare_group":
            allowed = {g for g in range(1, 5) if _holds(c.op, g, values)}
            groups = allowed if groups is None else groups & allowed
        else:
            raise Rejected(code, f"{c.attribute}: subscriptions filter on area_code, welfare_group and "
                                 "eligible_programme")
    if groups is not None and not groups:
        raise Rejected(code, "welfare_group: the conditions leave no group")
    return Filters(tuple(dict.fromkeys(programmes)), tuple(dict.fromkeys(areas)), tuple(sorted(groups or ())),
                   ("eligibility-decided",))


def _holds(op: str, g: int, values: tuple) -> bool:
    v = values[0]
    return {"eq": g == v, "in": g in values, "lt": g < v, "le": g <= v, "gt": g > v, "ge": g >= v}[op]


def notify_body(key, *, message_id: str, now: datetime, sender_id: str, receiver_id: str, transaction_id: str,
                payloads: list[dict]) -> dict:
    """The signed /registry/notify envelope of a DCI subscription's batch (`key`: notify's SigningKey)."""
    header = callback_header("notify", message_id=message_id, now=now, sender_id=sender_id, receiver_id=receiver_id,
                             total_count=len(payloads), completed_count=len(payloads))
    message = {"transaction_id": transaction_id, "notify_event": [notify_event(p) for p in payloads]}
    return {"signature": sign_envelope(key.key, key.kid, header, message), "header": header, "message": message}
