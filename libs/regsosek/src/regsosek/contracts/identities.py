"""The members' NIKs of one interview, sealed for the one service whose recipients may receive
them by name (issue 11, item 1: "member NIKs only for programmes configured to receive them by name").

`member.identities.v1` (`MemberIdentities`): intake publishes one per accepted interview, on the
`member-identities` topic, read by notify only. No identifier travels in clear: `sealed` is an
AES-256-GCM ciphertext (regsosek.crypto, with its key id) of the JSON list
`[{"line_no": 1, "nik": "…"}, …]` under the identity-feed key set (`REGSOSEK_IDENTITY_KEYS`), which
only intake (to seal) and notify (to open) hold; the ciphertext is bound to its family and
submission (`identity_aad`), so it cannot be replayed onto another family. A broker, a dead-letter
reader or any other consumer of the topic sees ids and ciphertext only. Members without a NIK are
left out; an interview with none still gets its (empty) record, so notify can tell "no NIK" from
"not yet arrived".

notify keeps the ciphertext as received (sealed at rest, docs/DATA_INVENTORY.md) and opens it only
to fill `nik` into the member-level decisions of a programme whose access entry grants
`member_identifiers` (notify/data/programme-access-*.yaml), at the moment of delivery.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from regsosek.contracts.base import Contract
from regsosek.contracts.identifiers import FamilyId, SlsId, SubmissionId, check_family_in_sls

Sealed = Annotated[str, StringConstraints(min_length=8, max_length=16384, pattern=r"^[A-Za-z0-9+/]+={0,2}$")]


class MemberIdentities(Contract):
    family_id: FamilyId
    sls_id: SlsId
    submission_id: SubmissionId
    members: Annotated[int, Field(ge=0, le=40)]  # how many NIKs are sealed (a count, for the operator)
    sealed: Sealed  # base64 of regsosek.crypto's ciphertext (key id inside)

    @model_validator(mode="after")
    def _family_in_sls(self) -> MemberIdentities:
        check_family_in_sls(self.family_id, self.sls_id)
        return self


def identity_aad(family_id: str, submission_id: object) -> bytes:
    """What a sealed identity list is bound to: its family and submission."""
    return f"member-identities|{family_id}|{submission_id}".encode()


def identity_plaintext(niks: dict[int, str]) -> bytes:
    """The sealed document: NIKs by the member's line number on the form (Block IV row)."""
    return json.dumps([{"line_no": n, "nik": niks[n]} for n in sorted(niks)], separators=(",", ":")).encode()


def parse_identity_plaintext(raw: bytes) -> dict[int, str]:
    """The NIKs by line number of an opened identity list (ValueError if it is not one)."""
    doc = json.loads(raw)
    if not isinstance(doc, list):
        raise ValueError("an identity list is a JSON list")
    out: dict[int, str] = {}
    for item in doc:
        line_no, nik = item.get("line_no"), item.get("nik")
        if not isinstance(line_no, int) or not isinstance(nik, str) or not (nik.isascii() and nik.isdigit()):
            raise ValueError("an identity list holds line numbers and ASCII-digit NIKs")
        out[line_no] = nik
    return out


def b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
