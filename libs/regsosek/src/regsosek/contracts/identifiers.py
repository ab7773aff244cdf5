"""Identifiers of the registration: NIK, KK number, BPS area codes, submission ids.

NIK and KK values are personal data: never log them; use `pseudonym()` where an
identifier must appear in logs or traces.
"""

from __future__ import annotations

import hashlib
from typing import Annotated
from uuid import UUID

from pydantic import StringConstraints

Nik = Annotated[str, StringConstraints(pattern=r"^\d{16}$")]
KkNumber = Annotated[str, StringConstraints(pattern=r"^\d{16}$")]
# SLS id = village (10 digits: province 2, regency 2, district 3, village 3) + SLS (4).
SlsId = Annotated[str, StringConstraints(pattern=r"^\d{14}$")]
SubmissionId = UUID


def province_of(sls_id: str) -> str:
    return sls_id[:2]


def regency_of(sls_id: str) -> str:
    return sls_id[:4]


def village_of(sls_id: str) -> str:
    return sls_id[:10]


def pseudonym(value: str, *, salt: str = "regsosek") -> str:
    """A stable, non-reversible short token for a personal identifier in logs."""
    return hashlib.blake2b(value.encode(), digest_size=8, key=salt.encode()[:64]).hexdigest()
