"""Identifiers of the registration: NIK, KK number, BPS area codes, submission ids.

NIK and KK values are personal data: never log them; use `pseudonym()` where an
identifier must appear in logs or traces.

Every numeric identifier is ASCII digits `0-9` only. `\\d` (in Python's `re` and in
pydantic-core's Rust regex alike) also matches fullwidth, Arabic-Indic, Devanagari and
other Unicode digits, and `int()` parses them: a NIK typed as `３２７...` would pass a
`\\d{16}` pattern, be stored as a different string from its ASCII twin and so escape
the nationwide duplicate check. Validate with `ascii_digits` / the types below, never `\\d`.
"""

from __future__ import annotations

import hashlib
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError


def is_ascii_digits(value: str, min_len: int = 1, max_len: int | None = None) -> bool:
    """`value` is `min_len`..`max_len` (default: exactly `min_len`) characters, each 0-9.

    Checked with `str.isascii()` and `str.isdigit()` (C, no loop in Python: every event's ids pass
    here): on an ASCII string `isdigit()` is true exactly for 0-9; `isascii()` first keeps out
    the other Unicode digits (fullwidth, superscripts, ...) that `isdigit()` alone would take."""
    max_len = min_len if max_len is None else max_len
    return min_len <= len(value) <= max_len and (not value or (value.isascii() and value.isdigit()))


def _digits_type(label: str, min_len: int, max_len: int | None = None, *, description: str = ""):
    """A str type that accepts only ASCII digits, with a 422-ready message (never the value)."""
    max_len = min_len if max_len is None else max_len
    count = f"{min_len}" if min_len == max_len else f"{min_len} to {max_len}"
    message = f"{label} must be {count} ASCII digits (0-9); other digit forms (fullwidth, Arabic-Indic, ...) are refused"
    pattern = f"^[0-9]{{{min_len}}}$" if min_len == max_len else f"^[0-9]{{{min_len},{max_len}}}$"

    def check(value: str) -> str:
        if not is_ascii_digits(value, min_len, max_len):
            raise PydanticCustomError("ascii_digits", message)
        return value

    schema = {"type": "string", "pattern": pattern, "minLength": min_len, "maxLength": max_len}
    if description:
        schema["description"] = description
    return Annotated[str, AfterValidator(check), WithJsonSchema(schema)]


Nik = _digits_type("NIK", 16)
KkNumber = _digits_type("KK number", 16)
# SLS id = village (10 digits: province 2, regency 2, district 3, village 3) + SLS (4).
SlsId = _digits_type("SLS id", 14)
VillageId = _digits_type("village id", 10, description="BPS village code: province 2, regency 2, district 3, village 3")
SubSls = _digits_type("sub-SLS", 2)
# An area an actor may act for: province (2), regency (4), district (7), village (10) or SLS (14) prefix.
AreaPrefix = _digits_type("area prefix", 2, 14)
AreaPrefixOrEmpty = _digits_type("area prefix", 0, 14)  # empty: the whole country
SubmissionId = UUID


def is_family_id(value: str) -> bool:
    """SLS id (14) + '-' + building serial (4) + '-' + family serial (3), ASCII digits only."""
    return (len(value) == 23 and value[14] == "-" and value[19] == "-" and value.isascii()
            and value[:14].isdigit() and value[15:19].isdigit() and value[20:].isdigit())


def _check_family_id(value: str) -> str:
    if not is_family_id(value):
        raise PydanticCustomError(
            "ascii_digits", "family id must be <14 ASCII digits>-<4 ASCII digits>-<3 ASCII digits> (0-9 only)")
    return value


FamilyId = Annotated[str, AfterValidator(_check_family_id),
                     WithJsonSchema({"type": "string", "pattern": r"^[0-9]{14}-[0-9]{4}-[0-9]{3}$"})]


def province_of(sls_id: str) -> str:
    return sls_id[:2]


def regency_of(sls_id: str) -> str:
    return sls_id[:4]


def village_of(sls_id: str) -> str:
    return sls_id[:10]


def pseudonym(value: str, *, salt: str = "regsosek") -> str:
    """A stable, non-reversible short token for a personal identifier in logs."""
    return hashlib.blake2b(value.encode(), digest_size=8, key=salt.encode()[:64]).hexdigest()


def check_family_in_sls(family: str, sls: str) -> None:
    """A family id begins with its SLS id (every contract carrying both checks this)."""
    if not family.startswith(sls + "-"):
        raise ValueError("family_id must begin with its sls_id")
