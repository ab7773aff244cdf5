"""Updates of a registered family (pemutakhiran, docs/DOMAIN.md), pure: a field-checked update or a
complaint's correction (`FamilyUpdated`) applied to the family's stored interview, and the
re-verification that follows.

What verify holds of a family is its latest interview, pseudonymised. An update changes that
stored state: a death or a member who moved keeps the member on the form with the new presence
code (so the household, the profile and classify's features drop them, and the member count still
reads against the roster as the field procedure explains it); a birth adds a new member; a housing
change replaces Block III; a family missed by the census arrives as its whole form. The changed
interview takes the update's submission id, the next version and the date the change occurred
(`interviewed_at` is the date the stored state describes: the profile's ages are counted on it),
and is decided again:

- verified (`updated`) when the change applies and its NIKs are free: classify re-classifies the
  family from the new profile, and the programmes get its new decision;
- flagged when the family no longer lives in its SLS (the whole family moved; nobody left living
  with it): classify withdraws its eligibility;
- kept (`Outcome.held_update`, nothing published) while the family is not verified yet: not
  registered yet (its interview still on its way), its interview held for the SLS roster, or
  flagged until a supervisor or a later roster decides it. The update is applied, as if it arrived
  then, in the transaction that verifies the family (VerifyHandlers.release_updates); one still
  waiting after the update hold timeout gets an `update_not_applicable` flag (`on_hold_expired`);
- an `update_not_applicable` flag when the update cannot apply to the family as verify holds it
  (no such member, the family rejected by a supervisor or not responding, its form no longer kept, a
  new family's id already taken, a NIK held by another family): no decision about the family, which
  stays as it was; the update's journey shows why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from typing import TypeVar

from regsosek.contracts import FlagReason, MemberPresence, VerificationOutcome
from regsosek.contracts import details as dt
from regsosek.contracts.interview import Relationship
from regsosek.contracts.updates import FamilyUpdated, MovedTo, PseudonymousChange, UpdateKind, UpdateWait
from verify.domain import (
    Claim,
    Decision,
    FamilyId,
    Interview,
    NikHash,
    Outcome,
    Roster,
    Stored,
    Verdict,
    matched_key,
)

T = TypeVar("T")

_MOVED = {MovedTo.WITHIN_INDONESIA: MemberPresence.MOVED_WITHIN_INDONESIA, MovedTo.ABROAD: MemberPresence.MOVED_ABROAD}


@dataclass(frozen=True)
class UpdateState:
    """What an update is decided on: whether the family was erased, its stored interview (locked, with
    its body), whether this update was applied already, the SLS's roster, who holds the NIKs the
    changed family would claim, and whether the update is kept already (waiting for the family)."""

    erased: bool
    stored: Stored | None
    applied: bool
    roster: Roster | None
    nik_holders: Mapping[NikHash, FamilyId] = field(default_factory=dict)
    kept: bool = False  # this update is kept already, waiting for the family to be verified


def claimed_niks(e: FamilyUpdated) -> list[NikHash]:
    """The NIKs (keyed hashes) an update brings to the family: the new-born's, or a new family's members'."""
    if e.change.member is not None and e.change.member.nik_hash:
        return [bytes.fromhex(e.change.member.nik_hash)]
    return sorted(e.change.family.nik_hashes()) if e.change.family is not None else []


class NotApplicable(Exception):
    """The update cannot apply to the family as verify holds it (the message says why; no identifier)."""


def _new_head(members: list, day: date) -> list:
    """After the head died or moved, the spouse living with the family heads it, else its oldest member
    living with it (the KK changes: a later interview or update gives the new relationships)."""
    residents = [m for m in members if m.presence.resident]
    if not residents or any(m.relationship is Relationship.HEAD for m in residents):
        return members
    spouse = next((m for m in residents if m.relationship is Relationship.SPOUSE), None)
    head = spouse or max(residents, key=lambda m: m.age_on(day))
    return [m.model_copy(update={"relationship": Relationship.HEAD}) if m is head else m for m in members]


def _leaves(iv: Interview, line_no: int, presence: MemberPresence, day: date) -> list:
    member = next((m for m in iv.members if m.line_no == line_no and m.presence.resident), None)
    if member is None:
        raise NotApplicable(dt.NO_RESIDENT_ON_LINE(line=line_no))
    return _new_head([m.model_copy(update={"presence": presence}) if m is member else m for m in iv.members], day)


def _given(value: T | None, c: PseudonymousChange, name: str) -> T:
    """A field the change's kind carries (the contract requires it: check_change_fields)."""
    if value is None:
        raise NotApplicable(dt.CHANGE_WITHOUT_FIELD(kind=c.kind.value, field=name))
    return value


def changed_interview(iv: Interview, e: FamilyUpdated) -> Interview:
    """The family's stored interview with the change applied (pure); NotApplicable when it cannot apply."""
    c = e.change
    update: dict = {"submission_id": e.submission_id, "version": iv.version + 1,
                    "interviewed_at": datetime.combine(e.occurred_on, time(12), tzinfo=UTC)}
    if c.kind is UpdateKind.DEATH:
        update["members"] = _leaves(iv, _given(c.line_no, c, "line_no"), MemberPresence.DIED, e.occurred_on)
    elif c.kind is UpdateKind.MEMBER_MOVED:
        moved_to = _MOVED[_given(c.moved_to, c, "moved_to")]
        update["members"] = _leaves(iv, _given(c.line_no, c, "line_no"), moved_to, e.occurred_on)
    elif c.kind is UpdateKind.BIRTH:
        born = _given(c.member, c, "member")
        if any(m.line_no == born.line_no for m in iv.members):
            raise NotApplicable(dt.LINE_TAKEN(line=born.line_no))
        update["members"] = [*iv.members, born]
    elif c.kind is UpdateKind.HOUSING_CHANGE:
        update["housing"] = c.housing
    if iv.version >= 1000:
        raise NotApplicable(dt.LAST_VERSION())
    return iv.model_copy(update=update)


def not_applicable(iv: Interview, stored: Stored | None, why: str) -> Outcome:
    """A flag about the update only: history in verify, the family's current sequence, nothing changed."""
    d = Decision(False, reason=FlagReason.UPDATE_NOT_APPLICABLE, detail=dt.UPDATE_NOT_APPLIED(why=why)[:500])
    return Outcome(verdicts=(Verdict(iv, d, "update_not_applicable", stored.decision_seq if stored else 0),))


# The states in which a family may still be verified: an update about it waits for that.
WAITS_IN = {"held": UpdateWait.INTERVIEW_HELD, "flagged": UpdateWait.FAMILY_FLAGGED}


def waits(stored: Stored | None) -> UpdateWait | None:
    """Why an update about this family waits (it is not verified yet but may be), or None."""
    if stored is None:
        return UpdateWait.FAMILY_NOT_REGISTERED
    return WAITS_IN.get(stored.state) if stored.interview is not None else None


def _placeholder(e: FamilyUpdated, stored: Stored | None) -> Interview:
    """The interview a refused update is reported against: the stored one under the update's id, else the
    new family's form, else a form with nothing but the ids (the flag carries only ids and the version)."""
    if stored is not None and stored.interview is not None:
        return stored.interview.model_copy(update={"submission_id": e.submission_id})
    if e.change.family is not None:
        return e.change.family
    return Interview.model_validate({
        "submission_id": e.submission_id, "officer_id": "update", "result": "not_found", "members": [],
        "interviewed_at": datetime.combine(e.occurred_on, time(12), tzinfo=UTC).isoformat(),
        "location": {"sls_id": e.sls_id, "building_no": int(e.family_id[15:19]), "family_no": int(e.family_id[20:23])}})


def on_update(state: UpdateState, e: FamilyUpdated) -> Outcome:
    """An update that counts: applied to the family's stored interview and decided again, or kept until
    the family is verified (see the module docstring). Ignored when the family was erased or the update
    was applied already (a redelivery). Unless kept, the update waits no longer (`update_done`)."""
    why = None if state.erased or state.applied or e.change.kind is UpdateKind.NEW_FAMILY else waits(state.stored)
    if why is not None:  # kept (once: a redelivery of a kept update changes nothing)
        return Outcome() if state.kept else Outcome(held_update=(e, why))
    return replace(_on_update(state, e), update_done=e.submission_id)


def _on_update(state: UpdateState, e: FamilyUpdated) -> Outcome:
    stored = state.stored
    if state.erased or state.applied:
        return Outcome()
    if e.change.kind is UpdateKind.NEW_FAMILY:
        if stored is not None:
            return not_applicable(_placeholder(e, stored), stored, dt.ALREADY_REGISTERED())
        try:
            family = _given(e.change.family, e.change, "family")
        except NotApplicable as missing:
            return not_applicable(_placeholder(e, stored), stored, str(missing))
        return _decided(family, None, state, dt.MISSED_FAMILY_CHECKED())
    if stored is None or stored.interview is None or stored.state != "verified":
        why = dt.FORM_NOT_KEPT() if stored is None or stored.interview is None \
            else dt.FAMILY_IN_STATE(state=stored.state)
        return not_applicable(_placeholder(e, stored), stored, why)
    try:
        iv = changed_interview(stored.interview, e)
    except NotApplicable as why:
        return not_applicable(_placeholder(e, stored), stored, str(why))
    if e.change.kind is UpdateKind.FAMILY_MOVED:
        d = Decision(False, reason=FlagReason.ROSTER_SAYS_MOVED, detail=dt.UPDATE_FAMILY_MOVED())
        return _outcome(iv, d, stored, state)
    if not iv.residents:
        d = Decision(False, reason=FlagReason.ROSTER_SAYS_DISSOLVED,
                     detail=dt.UPDATE_NO_RESIDENT())
        return _outcome(iv, d, stored, state)
    return _decided(iv, stored, state, dt.UPDATE_APPLIED(kind=e.change.kind.value, basis=e.basis.value))


WAITED = {UpdateWait.FAMILY_NOT_REGISTERED: dt.NEVER_REACHED_VERIFY(),
          UpdateWait.INTERVIEW_HELD: dt.STILL_WAITS_FOR_ROSTER(),
          UpdateWait.FAMILY_FLAGGED: dt.STILL_FLAGGED()}


def on_hold_expired(state: UpdateState, e: FamilyUpdated, timeout_s: float) -> Outcome:
    """A kept update whose family was not verified within the update hold timeout: decided as on arrival
    should the family be verified after all (or erased, or the update applied meanwhile), else an
    `update_not_applicable` flag saying why it waited; either way it waits no longer."""
    stored = state.stored
    if state.erased or state.applied or (stored is not None and stored.state == "verified"):
        return replace(on_update(state, e), update_done=e.submission_id)
    wait = waits(stored)
    why = WAITED.get(wait, dt.NOT_VERIFIED()) if wait is not None else dt.NOT_VERIFIED()
    flag = not_applicable(_placeholder(e, stored), stored, dt.UPDATE_WAITED_IN_VAIN(why=why, days=f"{timeout_s / 86400:g}"))
    return replace(flag, update_done=e.submission_id)


def _decided(iv: Interview, stored: Stored | None, state: UpdateState, detail: str) -> Outcome:
    """The changed family re-verified: its NIKs claimed (a NIK another family holds refuses the update,
    the family stays as it was), then verified as updated."""
    niks = iv.nik_hashes()
    clashes = sorted(line for h, line in niks.items() if state.nik_holders.get(h, iv.family_id) != iv.family_id)
    if clashes:
        return not_applicable(iv, stored, dt.DUPLICATE_NIK(lines=", ".join(str(n) for n in clashes)))
    d = Decision(True, outcome=VerificationOutcome.UPDATED, detail=detail)
    return _outcome(iv, d, stored, state, Claim(iv.family_id, niks, ()))


def _outcome(iv: Interview, d: Decision, stored: Stored | None, state: UpdateState,
             claim: Claim | None = None) -> Outcome:
    roster = state.roster
    seq = (stored.decision_seq if stored else 0) + 1
    matched = matched_key(iv, roster.entries) if roster is not None and stored is not None else None
    verdict = Verdict(iv, d, "update", seq, matched, roster.revision if matched and roster is not None else None)
    return Outcome(claims=(claim,) if claim else (), held=iv, verdicts=(verdict,))
