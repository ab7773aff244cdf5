"""What intake publishes of what it received: the interview and the roster without direct
identifiers (issue 11: pseudonymised events).

`interview.submitted.v2` (`InterviewSubmitted`) and `sls.roster.v2` (`RosterSubmitted`) carry, in
place of each NIK and KK number, its keyed hash (`regsosek.pseudonyms`, HMAC-SHA256 under intake's
NIK hash key), and no names, address, GPS or the form's free-text notes (which may name people).
Birth dates stay: verify computes the ages of
classify's household profile from them (a birth date alone does not identify a person; with
the family id it is personal data and protected as such, docs/DATA_INVENTORY.md).

The v1 shapes (`FamilyInterview`, `SlsRoster`: the documents as received, identifiers in clear)
stay readable by verify as legacy types: records retained on the topics from before the
rollout and re-driven dead letters (`upgraded` here turns one into v2 with the key).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from regsosek.contracts.base import Contract
from regsosek.contracts.identifiers import FamilyId, SlsId, SubmissionId, SubSls, check_family_in_sls
from regsosek.contracts.interview import (
    Business,
    ChronicDisease,
    DifficultyLevel,
    Diploma,
    FamilyEconomy,
    FamilyInterview,
    FunctionalDifficulties,
    HealthInsurance,
    Housing,
    IdDocument,
    Industry,
    InterviewResult,
    JobStatus,
    KkStatus,
    MaritalStatus,
    MemberPresence,
    MemberProgramme,
    Relationship,
    SchoolLevel,
    SchoolParticipation,
    Sex,
    SocialSecurity,
    SupervisorCheck,
    Under5Nutrition,
    check_parent_kk,
    check_result_shape,
    completed_years,
    family_id,
)
from regsosek.contracts.roster import RosterStatus, SlsRoster
from regsosek.pseudonyms import HexHash, kk_hash_hex, nik_hash_hex


class PseudonymousMember(Contract):
    """A member as verify needs it: the NIK's keyed hash instead of the NIK, no name."""

    line_no: Annotated[int, Field(ge=1, le=99)]
    nik_hash: HexHash | None = None  # HMAC-SHA256 of the NIK under intake's key; None: no NIK
    presence: MemberPresence = MemberPresence.LIVES_HERE
    sex: Sex
    date_of_birth: date | None = None  # unknown to the family: then `age`
    age: Annotated[int, Field(ge=0, le=150)] | None = None
    relationship: Relationship
    marital_status: MaritalStatus
    pregnant: bool = False
    school: SchoolParticipation
    school_level: SchoolLevel | None = None
    school_class: Annotated[int, Field(ge=1, le=8)] | None = None
    highest_diploma: Diploma
    has_npwp: bool | None = None
    worked_last_week: bool
    hours_worked: Annotated[int, Field(ge=0, le=168)] = 0
    industry: Industry | None = None
    job_status: JobStatus | None = None
    id_document: IdDocument | None = None
    has_business: bool = False
    business: Business | None = None
    difficulty: DifficultyLevel = DifficultyLevel.NONE
    difficulties: FunctionalDifficulties | None = None
    has_caregiver: bool | None = None
    chronic_disease: bool = False
    chronic_diseases: list[ChronicDisease] = Field(default_factory=list, max_length=len(ChronicDisease))
    under5_nutrition: Under5Nutrition | None = None
    health_insurance: HealthInsurance = HealthInsurance.NONE
    social_security: list[SocialSecurity] = Field(default_factory=list, max_length=len(SocialSecurity))
    programmes: list[MemberProgramme] = Field(default_factory=list, max_length=len(MemberProgramme))

    @model_validator(mode="after")
    def _birth_date_or_age(self) -> PseudonymousMember:
        if self.date_of_birth is None and self.age is None:
            raise ValueError("date_of_birth or, when it is unknown, age is required")
        return self

    def age_on(self, day: date) -> int:
        return completed_years(self.date_of_birth, self.age, day)


class PseudonymousLocation(Contract):
    """Block I without address and GPS; the KK number's keyed hash instead of the number."""

    sls_id: SlsId
    sub_sls: SubSls = "00"
    building_no: Annotated[int, Field(ge=1, le=9999)]
    family_no: Annotated[int, Field(ge=1, le=999)]
    kk_hash: HexHash | None = None
    kk_status: KkStatus = KkStatus.AS_PRELISTED
    parent_kk_hash: HexHash | None = None  # a split-off family: the keyed hash of the prelisted KK it split from

    @model_validator(mode="after")
    def _parent_only_when_split(self) -> PseudonymousLocation:
        check_parent_kk(self.kk_status, self.parent_kk_hash)
        return self

    @property
    def family_id(self) -> str:
        return family_id(self.sls_id, self.building_no, self.family_no)


class InterviewSubmitted(Contract):
    """`interview.submitted.v2`: a family interview as intake accepted it, pseudonymised."""

    submission_id: SubmissionId
    version: Annotated[int, Field(ge=1, le=1000)] = 1
    officer_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    interviewed_at: datetime
    result: InterviewResult = InterviewResult.COMPLETE
    supervisor_check: SupervisorCheck | None = None
    location: PseudonymousLocation
    housing: Housing | None = None  # None only for a non-response (see InterviewResult)
    members: Annotated[list[PseudonymousMember], Field(max_length=40)]
    economy: FamilyEconomy = Field(default_factory=FamilyEconomy)

    @model_validator(mode="after")
    def _result_shape(self) -> InterviewSubmitted:
        check_result_shape(self.result, self.housing is not None, len(self.residents))
        return self

    @property
    def family_id(self) -> str:
        return self.location.family_id

    @property
    def residents(self) -> list[PseudonymousMember]:
        """Members living with the family now (not died, moved or not found)."""
        return [m for m in self.members if m.presence.resident]

    def nik_hashes(self) -> dict[bytes, int]:
        """Each member's NIK hash (as stored in verify's nik_claims) -> its line number, of the
        members living with the family (one who died, moved or was not found claims no NIK: a
        member who moved may be on another family's form)."""
        return {bytes.fromhex(m.nik_hash): m.line_no for m in self.residents if m.nik_hash}


def pseudonymise_interview(iv: FamilyInterview, key: str) -> InterviewSubmitted:
    """The v2 event of an interview: NIK and KK number hashed under `key`, names, address and GPS
    left out. Pure."""
    loc = iv.location
    members = []
    for m in iv.members:
        doc = m.model_dump(exclude={"name", "nik"})
        members.append(PseudonymousMember(**doc, nik_hash=nik_hash_hex(key, m.nik)))
    return InterviewSubmitted(
        submission_id=iv.submission_id, version=iv.version, officer_id=iv.officer_id, interviewed_at=iv.interviewed_at,
        result=iv.result, supervisor_check=iv.supervisor_check,
        location=PseudonymousLocation(sls_id=loc.sls_id, sub_sls=loc.sub_sls, building_no=loc.building_no,
                                      family_no=loc.family_no, kk_hash=kk_hash_hex(key, loc.kk_number),
                                      kk_status=loc.kk_status, parent_kk_hash=kk_hash_hex(key, loc.parent_kk_number)),
        housing=iv.housing, members=members, economy=iv.economy)


class PseudonymousRosterFamily(Contract):
    building_no: Annotated[int, Field(ge=1, le=9999)]
    family_no: Annotated[int, Field(ge=1, le=999)]
    kk_hash: HexHash | None = None  # the KK number's keyed hash; no head name
    member_count: Annotated[int, Field(ge=1, le=40)]
    status: RosterStatus


class RosterSubmitted(Contract):
    """`sls.roster.v2`: an SLS roster (VK1) as intake accepted it, pseudonymised: KK numbers as keyed
    hashes, no head names, no name of the RT head who confirmed it."""

    submission_id: SubmissionId
    sls_id: SlsId
    officer_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    confirmed_at: datetime
    families: Annotated[list[PseudonymousRosterFamily], Field(min_length=1, max_length=2000)]

    @model_validator(mode="after")
    def _unique_serials(self) -> RosterSubmitted:
        keys = [(f.building_no, f.family_no) for f in self.families]
        if len(set(keys)) != len(keys):
            raise ValueError("a building and family serial is listed twice")
        return self


def pseudonymise_roster(r: SlsRoster, key: str) -> RosterSubmitted:
    """The v2 event of a roster (pure)."""
    return RosterSubmitted(
        submission_id=r.submission_id, sls_id=r.sls_id, officer_id=r.officer_id, confirmed_at=r.confirmed_at,
        families=[PseudonymousRosterFamily(building_no=f.building_no, family_no=f.family_no,
                                           kk_hash=kk_hash_hex(key, f.kk_number), member_count=f.member_count,
                                           status=f.status) for f in r.families])


class ErasureReason(StrEnum):
    """Why a family's identifiers were erased: data_subject_request = the family asked (Law 27/2022 art. 8/16);
    court_order; deceased_dissolved = the family no longer exists; registered_in_error; other."""

    DATA_SUBJECT_REQUEST = "data_subject_request"
    COURT_ORDER = "court_order"
    DECEASED_DISSOLVED = "deceased_dissolved"
    REGISTERED_IN_ERROR = "registered_in_error"
    OTHER = "other"


class FamilyErased(Contract):
    """`family.erased.v1`: intake erased a family's identifiers; every service erases what it holds
    of the family (ids only: no identifier travels with an erasure)."""

    erasure_id: SubmissionId
    family_id: FamilyId
    sls_id: SlsId
    reason: ErasureReason
    erased_at: datetime

    @model_validator(mode="after")
    def _family_in_sls(self) -> FamilyErased:
        check_family_in_sls(self.family_id, self.sls_id)
        return self
