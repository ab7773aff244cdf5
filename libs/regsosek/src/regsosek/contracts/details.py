"""The facts behind a verification decision, as verify writes them (`InterviewFlagged.detail`,
`InterviewVerified`'s stored detail, verify's history) and classify for a family a village
consultation takes out of the ranking, and the basis of a family's decile as classify writes it
(`FamilyClassified.decile_basis`): English sentences made from this closed
set of templates, each with a code, holding counts, serial numbers and member lines, never a NIK,
KK number or name.

The text stays what the contract has always carried, so integrators reading it see no change.
The console, which shows it to supervisors and officials in Bahasa Indonesia, reads a detail back
through the same templates (`read_detail`) and words each code in the reader's language; a text
no template makes (an older event, a free-text reason) is shown as it came. One table for both
sides: a sentence verify writes that the console cannot read is a unit-test failure, not a
supervisor reading English.

Fields are numbers, or comma-separated numbers, unless a template gives them another kind (`Field`):
a supervisor's id (no colon), a supervisor's own reason, a nested detail, a registry update's kind,
basis or field, verify's state (a code), a time, a version. Where two templates read the same text
(a detail nested in another), the first in `CATALOGUE` wins: the outer one. A text that reads no
way under these patterns (a supervisor id with a colon, say) is shown as it came."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class Field:
    """What a template's field holds: its pattern, and how a reader's language words it: "detail" (a
    detail of its own, read through this table again), "resolution" (a supervisor's reason, led by the
    console's kind of decision), the name of the list of codes it is one of, or None (as it is)."""

    pattern: str
    words: str | None = None


TEXT = r".+?"
WORD = r"[a-z_]+"
NUMBERS = Field(r"\d+(?:, \d+)*")  # a number, or numbers separated by ", "
DETAIL = Field(TEXT, "detail")
SUPERVISOR_REASON = Field(TEXT, "resolution")
SUPERVISOR_ID = Field(r"[^:]+?")  # ends at the ": " before the reason
DAYS = Field(r"[0-9.e+-]+")
TIME = Field(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
VERSION = Field(r"[A-Za-z0-9._-]+")
UPDATE_KIND = Field(WORD, "update_kind")
UPDATE_BASIS = Field(WORD, "update_basis")
UPDATE_FIELD = Field(WORD, "update_field")
VERIFY_STATE = Field(WORD, "verify_state")


@dataclass(frozen=True, eq=False)
class DetailTemplate:
    code: str
    text: str
    kinds: dict[str, Field] = field(default_factory=dict)  # fields that are not NUMBERS

    def __call__(self, **values: object) -> str:
        return self.text.format(**values)

    def kind(self, name: str) -> Field:
        return self.kinds.get(name, NUMBERS)

    @cached_property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for _, name, _, _ in string.Formatter().parse(self.text) if name)

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        parts = []
        for literal, name, _, _ in string.Formatter().parse(self.text):
            parts.append(re.escape(literal))
            if name:
                parts.append(f"(?P<{name}>{self.kind(name).pattern})")
        return re.compile("".join(parts), re.DOTALL)


def _t(code: str, text: str, **kinds: Field) -> DetailTemplate:
    return DetailTemplate(code, text, kinds)


# the census procedure (verify.domain)
NOT_ON_ROSTER = _t("not_on_roster", "building {building} family {family} and its KK are not on the SLS roster")
ROSTER_SAYS_MOVED = _t("roster_says_moved", "the RT head confirmed this family moved out of the SLS")
ROSTER_SAYS_DISSOLVED = _t("roster_says_dissolved", "the RT head confirmed this family dissolved or its head died")
ROSTER_SAYS_UNKNOWN = _t("roster_says_unknown", "the RT head does not know this family")
MEMBERS_DIFFER = _t("members_differ", "roster lists {roster} members, interview has {interview}")
PRELISTED_DIFFER = _t("prelisted_differ", "roster lists {roster} members, interview lists {prelisted} prelisted "
                                          "members ({residents} living with the family)")
DUPLICATE_NIK = _t("duplicate_nik", "NIK of member line(s) {lines} already belongs to another family")
DUPLICATE_INTERVIEW = _t("duplicate_interview", "this family was already interviewed with the same version; "
                                                "submit a correction as a higher version")
NO_ROSTER = _t("no_roster", "no SLS roster arrived within {hours} h of the interview")
NO_COMPETENT_RESPONDENT = _t("no_competent_respondent", "no competent respondent until the end of the collection "
                                                        "period")
REFUSED = _t("refused", "the family refused the interview")
OFFICER_FOUND_MOVED = _t("officer_found_moved", "the officer found the family moved")
OFFICER_NOT_FOUND = _t("officer_not_found", "the officer did not find the family")
# a supervisor's resolution (verify.domain.resolve)
VERIFIED_BY_SUPERVISOR = _t("verified_by_supervisor", "verified by supervisor {supervisor}", supervisor=SUPERVISOR_ID)
REJECTED_BY_SUPERVISOR = _t("rejected_by_supervisor", "rejected by supervisor {supervisor}: {reason}",
                            supervisor=SUPERVISOR_ID, reason=SUPERVISOR_REASON)

# registry updates after the census (verify.updates); a text field may itself be one of these
UPDATE_APPLIED = _t("update_applied", "{kind} applied ({basis})", kind=UPDATE_KIND, basis=UPDATE_BASIS)
MISSED_FAMILY_CHECKED = _t("missed_family_checked", "a family missed by the census, field-checked")
UPDATE_FAMILY_MOVED = _t("update_family_moved", "the family moved out of its SLS (update)")
UPDATE_NO_RESIDENT = _t("update_no_resident", "no member lives with the family any more (update)")
UPDATE_NOT_APPLIED = _t("update_not_applied", "update not applied: {why}", why=DETAIL)
UPDATE_WAITED_IN_VAIN = _t("update_waited_in_vain", "{why}; not verified within {days} days", why=DETAIL,
                           days=DAYS)
NO_RESIDENT_ON_LINE = _t("no_resident_on_line", "no member on line {line} lives with the family")
CHANGE_WITHOUT_FIELD = _t("change_without_field", "a {kind} change without {field}", kind=UPDATE_KIND,
                          field=UPDATE_FIELD)
LINE_TAKEN = _t("line_taken", "line {line} is another member's row on the family's form")
LAST_VERSION = _t("last_version", "the family's form has reached its last version")
ALREADY_REGISTERED = _t("already_registered", "a family with this id is registered already")
FORM_NOT_KEPT = _t("form_not_kept", "the family's form is no longer kept")
FAMILY_IN_STATE = _t("family_in_state", "the family is {state}, not verified", state=VERIFY_STATE)
NEVER_REACHED_VERIFY = _t("never_reached_verify", "the family's interview never reached verify")
STILL_WAITS_FOR_ROSTER = _t("still_waits_for_roster", "the family's interview still waits for the SLS roster")
STILL_FLAGGED = _t("still_flagged", "the family is still flagged")
NOT_VERIFIED = _t("not_verified", "the family is not verified")
# a village consultation's removal of a family (classify.consultation)
FKP_FAMILY_MOVED = _t("fkp_family_moved", "village consultation (FKP): the whole family moved away")
FKP_FAMILY_DIED = _t("fkp_family_died", "village consultation (FKP): the family head died and the family dissolved")

# the basis of a family's decile (classify.ranking, classify.store, classify.domain)
SCOPE_NATIONAL = _t("scope_national", "national")
SCOPE_PROVINCE = _t("scope_province", "province {code}")
SCOPE_REGENCY = _t("scope_regency", "regency {code}")
BASIS_RANKED = _t("basis_ranked", "ranked: {scope} at {at} among {families} families", scope=DETAIL, at=TIME)
BASIS_RANKED_AREA = _t("basis_ranked_area", "ranked: {scope} at {at} among {families} families (area {area} "
                                            "re-ranked after village consultation)", scope=DETAIL, at=TIME)
BASIS_RANKING_CUTS = _t("basis_ranking_cuts", "provisional: cut-points of the {scope} ranking at {at} among "
                                              "{families} families", scope=DETAIL, at=TIME)
BASIS_REFERENCE = _t("basis_reference", "provisional: reference cut-points of {model}", model=VERSION)
BASIS_WITHIN_FKP_GROUP = _t("basis_within_fkp_group", "{basis}; ranked within welfare group {group} set by village "
                                                      "consultation (FKP)", basis=DETAIL)

CATALOGUE: tuple[DetailTemplate, ...] = (
    NOT_ON_ROSTER, ROSTER_SAYS_MOVED, ROSTER_SAYS_DISSOLVED, ROSTER_SAYS_UNKNOWN, MEMBERS_DIFFER, PRELISTED_DIFFER,
    DUPLICATE_NIK, DUPLICATE_INTERVIEW, NO_ROSTER, NO_COMPETENT_RESPONDENT, REFUSED, OFFICER_FOUND_MOVED,
    OFFICER_NOT_FOUND, VERIFIED_BY_SUPERVISOR, REJECTED_BY_SUPERVISOR,
    UPDATE_APPLIED, MISSED_FAMILY_CHECKED, UPDATE_FAMILY_MOVED, UPDATE_NO_RESIDENT, UPDATE_NOT_APPLIED,
    UPDATE_WAITED_IN_VAIN, NO_RESIDENT_ON_LINE, CHANGE_WITHOUT_FIELD, LINE_TAKEN, LAST_VERSION, ALREADY_REGISTERED,
    FORM_NOT_KEPT, FAMILY_IN_STATE, NEVER_REACHED_VERIFY, STILL_WAITS_FOR_ROSTER, STILL_FLAGGED, NOT_VERIFIED,
    FKP_FAMILY_MOVED, FKP_FAMILY_DIED,
    SCOPE_NATIONAL, SCOPE_PROVINCE, SCOPE_REGENCY, BASIS_RANKED, BASIS_RANKED_AREA, BASIS_RANKING_CUTS,
    BASIS_REFERENCE, BASIS_WITHIN_FKP_GROUP,
)


def read_detail(text: str | None) -> tuple[DetailTemplate, dict[str, str]] | None:
    """The template a detail was made from and its fields' values; None for any other text."""
    if not text:
        return None
    for template in CATALOGUE:
        m = template.pattern.fullmatch(text)
        if m:
            return template, m.groupdict()
    return None
