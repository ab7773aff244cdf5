"""Intake's pure checks on a submission, beyond the contract's field rules.

Errors reject the submission (422 with every problem listed by JSON pointer);
warnings are facts real data can legitimately show (a NIK issued in another
regency) and travel with the event instead.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar, cast
from uuid import UUID

import orjson
from pydantic import TypeAdapter, ValidationError

from regsosek import areas
from regsosek.contracts import Contract, FamilyInterview, FkpAdjustment, MemberIdentities, SlsRoster, VerificationResolved
from regsosek.contracts.complaints import Complaint, ComplaintOutcome
from regsosek.contracts.identities import b64, identity_aad, identity_plaintext
from regsosek.contracts.interview import (
    DIFFICULTY_ASKED_FROM,
    DIFFICULTY_MIN_AGE,
    DifficultyLevel,
    KkStatus,
    Member,
    Relationship,
    Sex,
)
from regsosek.contracts.updates import FamilyUpdate, FieldCheck
from regsosek.crypto import Keyring


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
    """NIK = area(6) + DDMMYY (DD + 40 for women) + serial(4). Sex digits that disagree are an
    error; birth-date digits that disagree are a warning (the civil registry's date and the one
    the family gives differ in real data: a late registration, a date estimated at issue)."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    if m.nik is None:
        return errors, warnings
    dd, mm, yy = int(m.nik[6:8]), int(m.nik[8:10]), int(m.nik[10:12])
    female = dd > 40
    day = dd - 40 if female else dd
    if female != (m.sex is Sex.FEMALE):
        errors.append(Problem(f"{path}/nik", "NIK sex digits (day + 40 for women) disagree with sex"))
    dob = m.date_of_birth
    if dob is not None and (day, mm, yy) != (dob.day, dob.month, dob.year % 100):
        warnings.append(Problem(f"{path}/nik", "NIK birth-date digits disagree with date_of_birth"))
    return errors, warnings


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
    if loc.kk_status is KkStatus.SPLIT_OFF and loc.parent_kk_number is None:
        warnings.append(Problem("/location/parent_kk_number", "a split-off family without the KK it split from "
                                                              "cannot be matched to the prelist"))
    if loc.parent_kk_number is not None and loc.parent_kk_number == loc.kk_number:
        errors.append(Problem("/location/parent_kk_number", "a split-off family has a KK of its own"))
    if iv.supervisor_check is not None and iv.supervisor_check.checked_on < day:
        errors.append(Problem("/supervisor_check/checked_on", "before the interview date"))
    # the head among the members living with the family (a prelisted head who died or moved is not)
    heads = [i for i, m in enumerate(iv.members) if m.relationship is Relationship.HEAD and m.presence.resident]
    errors += _family_problems(iv, heads)
    head_age = iv.members[heads[0]].age_on(day) if len(heads) == 1 else None
    for i, m in enumerate(iv.members):
        p = f"/members/{i}"
        e, w = _member_problems(m, p, day, head_age)
        errors += e
        warnings += w
        if m.nik and m.nik[:4] != loc.sls_id[:4]:
            warnings.append(Problem(f"{p}/nik", "NIK area digits differ from the SLS regency (registered elsewhere)"))
    return errors, warnings


def _family_problems(iv: FamilyInterview, heads: list[int]) -> list[Problem]:
    errors: list[Problem] = []
    if iv.result.responded and len(heads) != 1:
        errors.append(Problem("/members", f"exactly one family head required, found {len(heads)}"))
    lines = [m.line_no for m in iv.members]
    if len(set(lines)) != len(lines):
        errors.append(Problem("/members", "line_no values must be unique"))
    niks = [m.nik for m in iv.members if m.nik]
    if len(set(niks)) != len(niks):
        errors.append(Problem("/members", "the same NIK appears on two members"))
    return errors


def _member_problems(m: Member, p: str, day: date, head_age: int | None) -> tuple[list[Problem], list[Problem]]:
    if m.date_of_birth is not None and m.date_of_birth > day:
        return [Problem(f"{p}/date_of_birth", "after the interview date")], []
    errors: list[Problem] = []
    if m.date_of_birth is not None and m.age is not None and m.age != m.age_on(day):
        errors.append(Problem(f"{p}/age", "disagrees with date_of_birth (give age only when the birth date is unknown)"))
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
    errors += difficulty_problems(m, p, age)
    if m.has_caregiver is not None and age < 60 and not m.difficulty.disability:
        errors.append(Problem(f"{p}/has_caregiver", "asked only of members aged 60+ or with a disability "
                                                    "(a lot of difficulty, or cannot, in a functional domain)"))
    if head_age is not None:
        if m.relationship in (Relationship.CHILD, Relationship.GRANDCHILD) and age >= head_age:
            errors.append(Problem(f"{p}/date_of_birth", f"{m.relationship.value} not younger than the head"))
        if m.relationship is Relationship.PARENT_OR_IN_LAW and age <= head_age:
            errors.append(Problem(f"{p}/date_of_birth", "parent not older than the head"))
    e, w = nik_problems(m, p)
    return errors + e, w


def difficulty_problems(m: Member, path: str, age: int) -> list[Problem]:
    """The functional-difficulty questions are asked only from the ages docs/FORM.md gives (the block
    from age 2; remembering and self-care from age 5): a difficulty other than none answered for a
    younger member is an error at its field. None is accepted at any age (it is also the default)."""
    errors: list[Problem] = []
    if age < DIFFICULTY_ASKED_FROM and m.difficulty is not DifficultyLevel.NONE:
        errors.append(Problem(f"{path}/difficulty", f"functional difficulty is asked only of members aged "
                                                    f"{DIFFICULTY_ASKED_FROM} or more (this member is {age})"))
    if m.difficulties is not None:
        for domain in m.difficulties.answered():
            if age < DIFFICULTY_MIN_AGE[domain]:
                errors.append(Problem(f"{path}/difficulties/{domain}",
                                      f"{domain} difficulty is asked only of members aged {DIFFICULTY_MIN_AGE[domain]} "
                                      f"or more (this member is {age})"))
    return errors


def canonical_json(document: dict) -> bytes:
    """A validated submission's canonical JSON (keys sorted): what is stored and what its hash is of.
    Copied to bytes of its own size: orjson's result keeps the buffer it grew (~16 KB for a 2.4 KB
    interview), and a submission holds these bytes until its request ends."""
    return memoryview(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).tobytes()


def content_hash(document: dict, canonical: bytes | None = None) -> bytes:
    """Hash of the canonical JSON of a validated submission: same content, same hash (`canonical`:
    that JSON when the caller has it already)."""
    return hashlib.sha256(canonical_json(document) if canonical is None else canonical).digest()


def text_problems(document, path: str = "", serialised: bytes | None = None) -> list[Problem]:
    """Text the database cannot store (U+0000) anywhere in a submission (`serialised`: its JSON,
    when the caller has it already)."""
    if not path and b"\\u0000" not in (orjson.dumps(document) if serialised is None else serialised):
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
    if kind == "update":  # counts only once field-checked (intake.registry_domain)
        if any(s.step == "not_confirmed" for s in steps):
            return "not_confirmed"
        if not any(s.step == "field_checked" for s in steps):
            return None
    elif kind != "interview" and not (kind == "complaint_outcome" and any(s.step in VERDICTS for s in steps)):
        return "accepted"  # a complaint's correction is decided like an update once verify answered
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


def member_identities(interview: FamilyInterview, identity_keys: Keyring) -> MemberIdentities:
    """The identity-feed record of an accepted interview: its members' NIKs by form line, sealed under
    the identity feed's current key and bound to the family and submission
    (regsosek.contracts.identities); only notify can open it."""
    niks = {m.line_no: m.nik for m in interview.members if m.nik}
    fid = interview.family_id
    sealed = identity_keys.seal(identity_plaintext(niks), identity_aad(fid, interview.submission_id))
    return MemberIdentities(family_id=fid, sls_id=interview.location.sls_id, submission_id=interview.submission_id,
                            members=len(niks), sealed=b64(sealed))


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
    elif kind in REGISTRY_KINDS:
        _redact_registry(doc)
    return doc


# The living registry's submissions (intake.registry_domain): updates, their field checks, complaints
# and complaint outcomes.
REGISTRY_KINDS = ("update", "field_check", "complaint", "complaint_outcome")


def _redact_registry(doc: dict) -> None:
    """An update's or a correction's change loses names, NIKs, KK numbers, address and GPS; a complaint
    its description and an outcome its reason (free text may name people)."""
    for key in ("description", "reason"):
        if doc.get(key):
            doc[key] = ""
    change = doc.get("change") or doc.get("correction") or {}
    family = change.get("family") or {}
    for k in ("kk_number", "parent_kk_number", "address", "gps"):
        family.get("location", {}).pop(k, None)
    for m in [change.get("member") or {}, *family.get("members", [])]:
        for k in _MEMBER_IDENTIFIERS:
            m.pop(k, None)


# ---------------------------------------------------------------- what a submission is, once checked


# What intake accepts as a submission (KIND_OF's keys): each has a submission_id, and an sls_id of its
# own or, for an interview, in its location.
Submitted = (FamilyInterview | SlsRoster | VerificationResolved | FkpAdjustment | FamilyUpdate | FieldCheck | Complaint
             | ComplaintOutcome)
S = TypeVar("S", bound=Submitted)

KIND_OF: dict[type[Contract], str] = {
    FamilyInterview: "interview", SlsRoster: "roster", VerificationResolved: "resolution", FkpAdjustment: "fkp",
    FamilyUpdate: "update", FieldCheck: "field_check", Complaint: "complaint", ComplaintOutcome: "complaint_outcome"}

# Who did it is the token's subject, never the body's word: the officer of an interview or a roster,
# the supervisor of a resolution, the village official of an FKP decision. The body field stays
# (the contract requires it, so existing clients keep working) but its value is not trusted: a
# different value is replaced by the token's subject before anything is stored or published, and
# the receipt says so in a warning at the field's pointer.
ACTOR_FIELDS = {"interview": "officer_id", "roster": "officer_id", "resolution": "supervisor_id", "fkp": "decided_by",
                "update": "reported_by", "field_check": "checked_by", "complaint": "filed_by",
                "complaint_outcome": "decided_by"}


@dataclass(frozen=True)
class Invalid:
    """A submission refused with every problem (422)."""

    problems: list[Problem]


@dataclass(frozen=True)
class Submission(Generic[S]):
    """A checked submission, ready to be decided on: `body` is what is stored (sealed), the
    document's canonical JSON (canonical_json), `contract` what is published (pseudonymised,
    intake.publisher). A request holds these bytes, not the document as dicts: a batch upload
    of 100 interviews held ~2.5 MB of them (BENCHMARKS.md, intake round 3)."""

    kind: str
    submission_id: UUID
    sls_id: str
    family_id: str | None
    version: int | None
    content_hash: bytes
    body: bytes
    contract: S
    submitted_by: str
    warnings: list[dict]
    # the trace context headers of the request that brought it (what its stored row and events name);
    # None: the current context's. A submission stored in another request's transaction (a group
    # commit, IntakeHandlers.submit) keeps its own.
    trace: Mapping[str, str] | None = None

    @property
    def document(self) -> dict:
        """What is stored, as a document (decoded from `body`)."""
        return orjson.loads(self.body)


def sls_of(data: Submitted) -> str:
    return data.location.sls_id if isinstance(data, FamilyInterview) else data.sls_id


def placement_problems(data: Submitted) -> list[Problem]:
    """Where a roster, resolution or FKP result claims to be, checked before the caller's areas are:
    a roster's village is in the area reference; a decision's family is in its SLS."""
    if isinstance(data, SlsRoster) and not known_sls_area(data.sls_id):
        return [Problem("/sls_id", "SLS id's village is not in the area reference")]
    if isinstance(data, (VerificationResolved, FkpAdjustment)) and not data.family_id.startswith(data.sls_id):
        return [Problem("/family_id", "family_id does not belong to sls_id")]
    return []


def recorded_actor(data: S, actor: str) -> tuple[S, list[Problem]] | Invalid:
    """`data` with its actor field set to the caller (token subject), and the warning if it was replaced.
    Only the new value is validated (by the field's own type and constraints): the rest of `data` is
    the model already validated, copied as it is."""
    name = ACTOR_FIELDS[KIND_OF[type(data)]]
    if getattr(data, name) == actor:
        return data, []
    try:
        value = _field_type(type(data), name).validate_python(actor)
    except ValidationError:
        return Invalid([Problem(f"/{name}", f"the token's subject does not fit {name} (too long for the field)")])
    # a copy of data's own class, so of type S (mypy types model_copy's result as S's bound)
    return cast(S, data.model_copy(update={name: value})), [
        Problem(f"/{name}", "replaced by the token's subject: the actor recorded is the authenticated caller")]


_FIELD_TYPES: dict[tuple[type, str], TypeAdapter[Any]] = {}


def _field_type(model: type[Contract], name: str) -> TypeAdapter[Any]:
    """A validator of one field of a contract: its type with its constraints (built once)."""
    if (model, name) not in _FIELD_TYPES:
        f = model.model_fields[name]
        field_type: Any = Annotated[(f.annotation, *f.metadata)]  # a type built at run time
        _FIELD_TYPES[model, name] = TypeAdapter(field_type)
    return _FIELD_TYPES[model, name]


def checked_submission(data: S, actor: str, *, collection: tuple[date, date],
                       trace: Mapping[str, str] | None = None) -> Submission[S] | Invalid:
    """The submission to decide on, or Invalid with every problem: the actor is the caller, an
    interview passes check_interview, no text holds what the database cannot store."""
    kind = KIND_OF[type(data)]
    recorded = recorded_actor(data, actor)
    if isinstance(recorded, Invalid):
        return recorded
    data, replaced = recorded
    errors: list[Problem] = []
    warnings: list[Problem] = []
    if isinstance(data, FamilyInterview):
        errors, warnings = check_interview(data, collection=collection)
    doc = data.model_dump(mode="json")
    body = canonical_json(doc)  # serialised once: the NUL check, the hash and the stored body
    errors += text_problems(doc, serialised=body)
    if errors:
        return Invalid(errors)
    return Submission(
        kind=kind, submission_id=data.submission_id, sls_id=sls_of(data), family_id=getattr(data, "family_id", None),
        version=data.version if isinstance(data, FamilyInterview) else None, content_hash=content_hash(doc, body),
        body=body, contract=data, submitted_by=actor, warnings=[w.as_dict() for w in [*warnings, *replaced]],
        trace=trace)


# ---------------------------------------------------------------- idempotency: new, replay, conflict, erased


@dataclass(frozen=True)
class Received:
    """What intake keeps of a stored submission, enough to answer a repeat of it."""

    submission_id: UUID
    kind: str
    sls_id: str
    family_id: str | None
    version: int | None
    content_hash: bytes
    event_id: str
    received_at: datetime
    warnings: list


@dataclass(frozen=True)
class Receipt:
    """The answer to an accepted submission: 202 the first time, 200 (`replayed`) for a repeat."""

    submission_id: UUID
    kind: str
    sls_id: str
    family_id: str | None
    version: int | None
    event_id: str
    received_at: datetime
    warnings: list
    replayed: bool

    @classmethod
    def of(cls, r: Received, *, replayed: bool) -> Receipt:
        return cls(r.submission_id, r.kind, r.sls_id, r.family_id, r.version, r.event_id, r.received_at,
                   r.warnings, replayed)

    def as_dict(self) -> dict:
        return {
            "submission_id": str(self.submission_id), "kind": self.kind, "sls_id": self.sls_id,
            "family_id": self.family_id, "version": self.version, "event_id": self.event_id,
            "received_at": self.received_at.isoformat(), "warnings": self.warnings,
            "status": "duplicate_of_earlier_receipt" if self.replayed else "accepted",
        }


@dataclass(frozen=True)
class Conflict:
    """The submission id was used before for different content (409)."""

    submission_id: UUID


@dataclass(frozen=True)
class Erased:
    """The submission is about a family whose identifiers were erased (410): not accepted again."""

    family_id: str


@dataclass(frozen=True)
class IntakeState:
    """What the decision on some submissions needs: the stored submissions with their ids, and
    the erased families among theirs (and among the families of their rosters' SLS)."""

    earlier: Mapping[UUID, Received] = field(default_factory=dict)
    erased_families: frozenset[str] = frozenset()


class Decision(StrEnum):
    NEW = "new"  # store and publish
    REPLAY = "replay"  # same id, same content: the first receipt again
    CONFLICT = "conflict"  # same id, other content
    ERASED = "erased"  # about an erased family


@dataclass(frozen=True)
class Outcome:
    """The decision on one submission. A NEW one carries what to store (a roster without the
    identifiers of erased families); a REPLAY either the stored one it repeats (`earlier`) or
    the index of the submission of the same batch it repeats (`first`)."""

    decision: Decision
    submission: Submission
    earlier: Received | None = None
    first: int | None = None


def decide_submissions(subs: Sequence[Submission], state: IntakeState) -> list[Outcome]:
    """One decision per submission, in order. A submission about an erased family is refused;
    one whose id is stored is a replay when kind and content hash are the same, else a conflict;
    the same id twice in one batch is weighed against its first occurrence; anything else is new."""
    out: list[Outcome] = []
    first_new: dict[UUID, int] = {}
    for s in subs:
        if s.family_id is not None and s.family_id in state.erased_families:
            out.append(Outcome(Decision.ERASED, s))
            continue
        earlier = state.earlier.get(s.submission_id)
        if earlier is not None:
            same = (earlier.content_hash, earlier.kind) == (s.content_hash, s.kind)
            out.append(Outcome(Decision.REPLAY if same else Decision.CONFLICT, s, earlier=earlier))
        elif s.submission_id in first_new:
            i = first_new[s.submission_id]
            same = (subs[i].content_hash, subs[i].kind) == (s.content_hash, s.kind)
            out.append(Outcome(Decision.REPLAY if same else Decision.CONFLICT, s, first=i))
        else:
            first_new[s.submission_id] = len(out)
            out.append(Outcome(Decision.NEW, _without_erased_families(s, state.erased_families)))
    return out


def _without_erased_families(s: Submission, erased: frozenset[str]) -> Submission:
    """A roster received after an erasure that still lists the erased family is stored without that
    family's identifiers (redact_family) and published without its KK number's pseudonym: an erasure
    is not undone by the next roster. Its content hash stays that of what was received, so a repeat
    still gets its receipt."""
    erased_here = sorted(f for f in erased if f[:14] == s.sls_id) if s.kind == "roster" else []
    if not erased_here:
        return s
    doc = s.document
    for family_id in erased_here:
        doc = redact_family("roster", doc, family_id)
    places = {(int(f[15:19]), int(f[20:23])) for f in erased_here}
    roster = s.contract
    assert isinstance(roster, SlsRoster)
    families = [f.model_copy(update={"kk_number": None}) if (f.building_no, f.family_no) in places else f
                for f in roster.families]
    return replace(s, body=canonical_json(doc), contract=roster.model_copy(update={"families": families}))


# ---------------------------------------------------------------- the journey and the status view's records


@dataclass(frozen=True)
class JourneyEntry:
    """A step of a submission's journey as recorded from a downstream event (ids, codes and times only)."""

    submission_id: UUID
    step: str
    detail: dict
    event_id: str
    decision_seq: int = 0


@dataclass(frozen=True)
class JourneyStep:
    step: str
    detail: dict
    decision_seq: int


@dataclass(frozen=True)
class SubmissionRecord:
    submission_id: UUID
    kind: str
    sls_id: str
    family_id: str | None
    version: int | None
    trace_id: str | None
    received_at: datetime
    warnings: list


@dataclass(frozen=True)
class Journey:
    """A submission and its journey downstream, in arrival order; `final` weighs it (final_state)."""

    submission: SubmissionRecord
    steps: list[JourneyStep]

    @property
    def final(self) -> str | None:
        return final_state(self.submission.kind, [Step(s.step, s.decision_seq) for s in self.steps])


@dataclass(frozen=True)
class Expiring:
    """A submission whose body may have outlived its retention: what body_expires weighs."""

    submission_id: UUID
    kind: str
    received_at: datetime
    steps: list[Step]


def expired_bodies(candidates: Sequence[Expiring], cutoff: datetime) -> list[UUID]:
    return [c.submission_id for c in candidates if body_expires(c.kind, c.steps, c.received_at, cutoff)]


# ---------------------------------------------------------------- erasure


@dataclass(frozen=True)
class StoredBody:
    """A stored body, opened: the submission it belongs to, its kind and the document."""

    submission_id: UUID
    kind: str
    document: dict


@dataclass(frozen=True)
class Erasure:
    """An erasure request as it is recorded (ids and codes only)."""

    erasure_id: UUID
    family_id: str
    sls_id: str
    reason: str
    reference: str | None
    erased_by: str


@dataclass(frozen=True)
class EarlierErasure:
    erasure_id: UUID
    reason: str
    erased_at: datetime


@dataclass(frozen=True)
class ErasureState:
    """What an erasure needs: the family's earlier erasure, else every body that may name it."""

    earlier: EarlierErasure | None
    bodies: list[StoredBody]


@dataclass(frozen=True)
class ErasureDecision:
    """An erasure repeated (`earlier`), or the bodies to store again without the family's identifiers."""

    earlier: EarlierErasure | None
    redacted: list[StoredBody]

    @property
    def changed(self) -> dict[str, int]:
        """Bodies changed per kind (counts only, for the audit entry)."""
        out: dict[str, int] = {}
        for b in self.redacted:
            out[b.kind] = out.get(b.kind, 0) + 1
        return out


def decide_erasure(family_id: str, state: ErasureState) -> ErasureDecision:
    if state.earlier is not None:
        return ErasureDecision(state.earlier, [])
    redacted = [StoredBody(b.submission_id, b.kind, redact_family(b.kind, b.document, family_id))
                for b in state.bodies]
    return ErasureDecision(None, [r for r, b in zip(redacted, state.bodies, strict=True) if r.document != b.document])
