"""Intake's pure checks on a submission, beyond the contract's field rules.

Errors reject the submission (422 with every problem listed by JSON pointer);
warnings are facts real data can legitimately show (a NIK issued in another
regency) and travel with the event instead.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from datetime import date, datetime

import orjson

from regsosek import areas
from regsosek.contracts import FamilyInterview
from regsosek.contracts.interview import Member, Relationship, Sex


@dataclass(frozen=True)
class Problem:
    path: str  # JSON pointer into the submitted document
    reason: str

    def as_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason}


def area_reference() -> dict:
    """Regencies of the shipped area reference (see regsosek.areas)."""
    return {"regencies": dict(areas.reference().regencies)}


def known_sls_area(sls_id: str) -> bool:
    """The SLS id's village is in the area reference (BPS village code = first 10 digits)."""
    return areas.reference().knows_sls(sls_id)


def nik_problems(m: Member, path: str) -> tuple[list[Problem], list[Problem]]:
    """NIK = area(6) + DDMMYY (DD + 40 for women) + serial(4)."""
    errors: list[Problem] = []
    if m.nik is None:
        return errors, []
    dd, mm, yy = int(m.nik[6:8]), int(m.nik[8:10]), int(m.nik[10:12])
    female = dd > 40
    day = dd - 40 if female else dd
    if female != (m.sex is Sex.FEMALE):
        errors.append(Problem(f"{path}/nik", "NIK sex digits (day + 40 for women) disagree with sex"))
    if (day, mm, yy) != (m.date_of_birth.day, m.date_of_birth.month, m.date_of_birth.year % 100):
        errors.append(Problem(f"{path}/nik", "NIK birth-date digits disagree with date_of_birth"))
    return errors, []


def check_interview(iv: FamilyInterview, *, collection: tuple[date, date]) -> tuple[list[Problem], list[Problem]]:
    """Every error and warning of an interview beyond the contract's field rules."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    loc = iv.location
    if not known_sls_area(loc.sls_id):
        errors.append(Problem("/location/sls_id", "SLS id's village is not in the area reference"))
    day = iv.interviewed_at.date()
    if not (collection[0] <= day <= collection[1]):
        errors.append(Problem("/interviewed_at", f"outside the collection period {collection[0]}..{collection[1]}"))
    heads = [i for i, m in enumerate(iv.members) if m.relationship is Relationship.HEAD]
    errors += _family_problems(iv, heads)
    head_age = iv.members[heads[0]].age_on(day) if len(heads) == 1 else None
    for i, m in enumerate(iv.members):
        p = f"/members/{i}"
        errors += _member_problems(m, p, day, head_age)
        if m.nik and m.nik[:4] != loc.sls_id[:4]:
            warnings.append(Problem(f"{p}/nik", "NIK area digits differ from the SLS regency (registered elsewhere)"))
    return errors, warnings


def _family_problems(iv: FamilyInterview, heads: list[int]) -> list[Problem]:
    errors: list[Problem] = []
    if len(heads) != 1:
        errors.append(Problem("/members", f"exactly one family head required, found {len(heads)}"))
    lines = [m.line_no for m in iv.members]
    if len(set(lines)) != len(lines):
        errors.append(Problem("/members", "line_no values must be unique"))
    niks = [m.nik for m in iv.members if m.nik]
    if len(set(niks)) != len(niks):
        errors.append(Problem("/members", "the same NIK appears on two members"))
    return errors


def _member_problems(m: Member, p: str, day: date, head_age: int | None) -> list[Problem]:
    if m.date_of_birth > day:
        return [Problem(f"{p}/date_of_birth", "after the interview date")]
    errors: list[Problem] = []
    age = m.age_on(day)
    if age > 120:
        errors.append(Problem(f"{p}/date_of_birth", "age over 120"))
    if m.relationship in (Relationship.HEAD, Relationship.SPOUSE) and age < 10:
        errors.append(Problem(f"{p}/date_of_birth", f"{m.relationship.value} younger than 10"))
    if m.marital_status.value != "never_married" and age < 10:
        errors.append(Problem(f"{p}/marital_status", "ever-married member younger than 10"))
    if m.pregnant and not (10 <= age <= 55):
        errors.append(Problem(f"{p}/pregnant", "pregnancy outside ages 10-55"))
    if m.under5_nutrition is not None and age >= 5:
        errors.append(Problem(f"{p}/under5_nutrition", "applies only to children under five"))
    if head_age is not None:
        if m.relationship in (Relationship.CHILD, Relationship.GRANDCHILD) and age >= head_age:
            errors.append(Problem(f"{p}/date_of_birth", f"{m.relationship.value} not younger than the head"))
        if m.relationship is Relationship.PARENT_OR_IN_LAW and age <= head_age:
            errors.append(Problem(f"{p}/date_of_birth", "parent not older than the head"))
    e, _ = nik_problems(m, p)
    return errors + e


def content_hash(document: dict) -> bytes:
    """Hash of the canonical JSON of a validated submission: same content, same hash."""
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).digest()


def text_problems(document, path: str = "") -> list[Problem]:
    """Text the database cannot store (U+0000) anywhere in a submission."""
    if not path and b"\\u0000" not in orjson.dumps(document):
        return []  # the common case, found in one pass over the serialised document
    if isinstance(document, str):
        return [Problem(path or "/", "text contains a NUL character")] if "\x00" in document else []
    if isinstance(document, dict):
        return [p for k, v in document.items() for p in text_problems(v, f"{path}/{k}")]
    if isinstance(document, list):
        return [p for i, v in enumerate(document) for p in text_problems(v, f"{path}/{i}")]
    return []


# ---------------------------------------------------------------- the status view


VERDICTS = ("verified", "flagged")


@dataclass(frozen=True)
class Step:
    """A step of a submission's journey as the status view weighs it: verified / flagged carry
    verify's decision sequence, classified / eligibility classify's, 0 when the event had none."""

    step: str
    decision_seq: int = 0


def final_state(kind: str, steps: list[Step]) -> str | None:
    """decided (eligibility known, newest verification positive), flagged, or None (in progress).

    `steps` come in arrival order; verified and flagged travel on two topics, so the newest of
    verify's decisions is the one with the highest decision sequence, not the last to arrive
    (a flag that arrived before the verification it withdrew still stands; an older flag arriving
    after a supervisor's verification does not). Steps without a sequence (0) are older than any
    with one and count in arrival order among themselves."""
    if kind != "interview":
        return "accepted"
    verdicts = [(s.decision_seq, i, s.step) for i, s in enumerate(steps) if s.step in VERDICTS]
    if verdicts and max(verdicts)[2] == "flagged":
        return "flagged"  # never verified, or verification withdrawn later
    if any(s.step == "eligibility" for s in steps):
        return "decided"
    return None


def body_expires(kind: str, steps: list[Step], received_at: datetime, cutoff: datetime) -> bool:
    """Retention of what intake received (docs/RETENTION.md): a submission's body is emptied once
    it was received before `cutoff` (REGSOSEK_SUBMISSION_BODY_RETENTION_DAYS ago) and its journey
    is final (decided or flagged; rosters, resolutions and FKP results are final when accepted).
    An interview still on its way keeps its body however old it is."""
    return received_at < cutoff and final_state(kind, steps) is not None


# ---------------------------------------------------------------- what is published, what is erased


def event_of(data, nik_hash_key: str):
    """What intake publishes of an accepted submission: an interview or a roster pseudonymised
    (NIK and KK number as keyed hashes; no names, address or GPS: regsosek.contracts.pseudonymous),
    anything else as it is."""
    from regsosek.contracts import SlsRoster, pseudonymise_interview, pseudonymise_roster

    if isinstance(data, FamilyInterview):
        return pseudonymise_interview(data, nik_hash_key)
    if isinstance(data, SlsRoster):
        return pseudonymise_roster(data, nik_hash_key)
    return data


_INTERVIEW_LOCATION_IDENTIFIERS = ("kk_number", "address", "gps")
_MEMBER_IDENTIFIERS = ("name", "nik")


def redact_family(kind: str, document: dict, family_id: str) -> dict:
    """A stored body without the erased family's direct identifiers (pure; the input is not changed):
    its interviews lose KK number, address, GPS and every member's name and NIK (the coded answers
    stay: the decisions made on them are accounted for); its entry in a roster loses KK number and
    head name; its resolutions and FKP results lose their free-text reason (it may name people).
    Other documents come back unchanged."""
    doc = copy.deepcopy(document)
    if kind == "interview":
        loc = doc.get("location", {})
        for k in _INTERVIEW_LOCATION_IDENTIFIERS:
            loc.pop(k, None)
        for m in doc.get("members", []):
            for k in _MEMBER_IDENTIFIERS:
                m.pop(k, None)
    elif kind == "roster":
        sls, building, family = family_id[:14], int(family_id[15:19]), int(family_id[20:23])
        if doc.get("sls_id") == sls:
            for f in doc.get("families", []):
                if (f.get("building_no"), f.get("family_no")) == (building, family):
                    f.pop("kk_number", None)
                    f.pop("head_name", None)
    elif kind in ("resolution", "fkp") and doc.get("family_id") == family_id and doc.get("reason"):
        doc["reason"] = ""
    return doc
