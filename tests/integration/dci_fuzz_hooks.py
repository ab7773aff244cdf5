"""Hooks for fuzzing notify's DCI endpoints from the DCI specification itself (test_dci.py): every
generated request is made one a registered requester could send (its sender_id, this registry as
receiver, a fresh message_id and message_ts, the action its path takes, the version this registry
speaks, the test's callback receiver as sender_uri) and signed with that
requester's key, so the fuzz reaches past the envelope checks into what the endpoints do with the
message: search criteria, queries, pagination, sorting, subscriptions, transaction ids, encrypted
messages. Whatever the generator drew for the message, and for is_msg_encrypted, is kept.

The requester comes from the environment (REGSOSEK_FUZZ_DCI_SENDER, REGSOSEK_FUZZ_DCI_KEY, the
raw Ed25519 private key, base64, and REGSOSEK_FUZZ_DCI_CALLBACK): the test registers it with the notify it starts. Loading this
module also loads api_fuzz_checks, whose check (no refusal repeats a request value) runs too."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime

import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from notify import dci_domain as dd

import api_fuzz_checks  # (registers no_request_value_in_errors)

ACTIONS = {"/registry/search": "search", "/registry/sync/search": "search", "/registry/subscribe": "subscribe",
           "/registry/unsubscribe": "unsubscribe", "/registry/txn/status": "txn-status",
           "/registry/sync/txn/status": "txn-status"}
RECEIVER = "regsosek"
# the envelope's ids are put in by the hook, not drawn: an answer may name its sender and the requester
api_fuzz_checks.NOT_THE_CALLERS.update({RECEIVER, os.environ.get("REGSOSEK_FUZZ_DCI_SENDER", "")})


def as_requester(body: object, path: str, sender: str, key: Ed25519PrivateKey, now: datetime,
                 callback: str) -> object:
    """The body with the envelope a registered requester would give it (its ids, a fresh message,
    version 1.0.0, a count, a URL drawn for callbacks replaced by `callback`), signed; a body that is
    not an envelope (not an object, or its header or message not objects) is left as drawn."""
    if not isinstance(body, dict) or not isinstance(body.get("header"), dict):
        return body
    message = body.get("message")
    if not isinstance(message, dict):
        return body
    drawn = body["header"]
    header = {**drawn, "sender_id": sender, "receiver_id": RECEIVER, "message_id": str(uuid.uuid4()),
              "message_ts": now.isoformat(), "action": ACTIONS.get(path, drawn.get("action")), "version": "1.0.0"}
    if not isinstance(drawn.get("total_count"), int) or drawn["total_count"] < 0:
        header["total_count"] = 1
    if isinstance(drawn.get("sender_uri"), str) and drawn["sender_uri"].startswith(("http://", "https://")):
        header["sender_uri"] = callback  # callbacks and subscriptions go to the test's receiver, not the internet
    return {**body, "header": header, "signature": dd.sign_envelope(key, sender, header, message)}


@schemathesis.hook
def before_call(ctx, case, kwargs):
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(os.environ["REGSOSEK_FUZZ_DCI_KEY"]))
    case.body = as_requester(case.body, case.operation.path, os.environ["REGSOSEK_FUZZ_DCI_SENDER"], key,
                             datetime.now(UTC), os.environ["REGSOSEK_FUZZ_DCI_CALLBACK"])

