"""Classify's input: the proxy-means-test (PMT) view of one verified family.

Why it exists (privacy by design, minimal events): `interview-verified` used to carry the
whole `FamilyInterview` (every member's NIK, name and full birth date, the KK number, the
address, GPS), and classify kept it in its database. Classify needs none of that. A
`HouseholdProfile` holds exactly what classify reads (`classify.model.features()` and
`components()`, the area for the regency's poverty line and `is_urban`, and the ids it
keys and publishes by) and nothing else:

- per member living with the family (item 404: lives here or new member; members who died,
  moved or were not found are left out of the household), in the interview's order: the
  **age in completed years on the interview date**
  (computed by verify when it builds the event, `household_profile`; never the birth date),
  sex, relationship to the head, pregnancy, school participation, highest diploma, work
  last week with industry and status, and the worst functional difficulty;
- the housing answers the PMT uses (floor area and materials, water, lighting and installed
  power, cooking fuel, toilet and disposal), and the family's assets, livestock, internet
  access and bank account;
- the ids: family id, SLS id (area: the regency is its first four digits), submission id
  and interview version.

Not carried: names, NIKs, KK number, address, GPS, building/family serials beyond the
family id, birth dates, marital status, hours worked, business details, the per-domain
difficulties, caregiver, chronic disease, nutrition, insurance, ID documents, programmes
received, tenure and land title, officer id, interview time. A model that needs another
answer adds it here first (a reviewed contract change), so the data classify holds stays
what it uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Annotated

from pydantic import Field, model_validator

from regsosek.contracts.base import Contract
from regsosek.contracts.identifiers import FamilyId, SlsId, SubmissionId, check_family_in_sls
from regsosek.contracts.interview import (
    Asset,
    CookingFuel,
    DifficultyLevel,
    Diploma,
    FaecesDisposal,
    FamilyInterview,
    FloorMaterial,
    Industry,
    InstalledPower,
    JobStatus,
    LightingSource,
    Livestock,
    Member,
    Relationship,
    RoofMaterial,
    SchoolParticipation,
    Sex,
    ToiletFacility,
    WallMaterial,
    WaterSource,
)
from regsosek.contracts.pseudonymous import InterviewSubmitted, PseudonymousMember

MAX_AGE = 150


class ProfileMember(Contract):
    """One member as the PMT sees them: no name, NIK or birth date."""

    age: Annotated[int, Field(ge=0, le=MAX_AGE)]  # completed years on the interview date (computed by verify)
    sex: Sex
    relationship: Relationship
    pregnant: bool = False
    school: SchoolParticipation
    highest_diploma: Diploma
    worked_last_week: bool
    industry: Industry | None = None
    job_status: JobStatus | None = None
    difficulty: DifficultyLevel = DifficultyLevel.NONE  # worst functional difficulty across domains
    # The member's row on the form (Block IV, 1-based), counting members who died or moved: how a
    # member-level decision names the member to a programme. None in profiles stored before it existed.
    line_no: Annotated[int, Field(ge=1, le=40)] | None = None


class ProfileHousing(Contract):
    """The Block III answers the PMT uses."""

    floor_area_m2: Annotated[float, Field(gt=0, le=10_000)]
    floor: FloorMaterial
    wall: WallMaterial
    roof: RoofMaterial
    drinking_water: WaterSource
    lighting: LightingSource
    installed_power: InstalledPower | None = None
    cooking_fuel: CookingFuel
    toilet: ToiletFacility
    faeces_disposal: FaecesDisposal


class ProfileEconomy(Contract):
    """The Block V answers the PMT uses."""

    assets: list[Asset] = Field(default_factory=list, max_length=len(Asset))
    livestock: Livestock = Field(default_factory=Livestock)
    internet_access: bool = False
    bank_account: bool = False


class HouseholdProfile(Contract):
    """Classify's input for one verified family (see the module docstring for why)."""

    family_id: FamilyId
    sls_id: SlsId
    submission_id: SubmissionId
    version: Annotated[int, Field(ge=1, le=1000)]
    members: Annotated[list[ProfileMember], Field(min_length=1, max_length=40)]
    housing: ProfileHousing
    economy: ProfileEconomy = Field(default_factory=ProfileEconomy)

    @model_validator(mode="after")
    def _members_rows_unique(self) -> HouseholdProfile:
        rows = [m.line_no for m in self.members if m.line_no is not None]
        if len(rows) != len(set(rows)):
            raise ValueError("two members cannot share a form row (line_no)")
        return self

    @model_validator(mode="after")
    def _family_in_sls(self) -> HouseholdProfile:
        check_family_in_sls(self.family_id, self.sls_id)
        return self

    @property
    def regency(self) -> str:
        return self.sls_id[:4]

    @property
    def head(self) -> ProfileMember | None:
        return next((m for m in self.members if m.relationship is Relationship.HEAD), None)


def age_in_years(member: Member | PseudonymousMember, day: date) -> int:
    """Completed years on `day`, bounded to the contract's range (a birth date after the
    interview, which intake refuses, reads as 0; the PMT's age thresholds see the same)."""
    return min(max(member.age_on(day), 0), MAX_AGE)


def household_profile(iv: FamilyInterview | InterviewSubmitted) -> HouseholdProfile:
    """The PMT view of an interview: its members living with the family, ages at the interview
    date (the interview's own local date; the age given when the birth date is unknown), every
    identifying field left out. Pure. A non-response (no housing) has no profile: ValueError."""
    day = iv.interviewed_at.date()
    h, e = iv.housing, iv.economy
    members: Sequence[Member | PseudonymousMember] = iv.members  # either form's members
    if h is None:
        raise ValueError(f"a {iv.result.value} interview has no household profile")
    return HouseholdProfile(
        family_id=iv.family_id,
        sls_id=iv.location.sls_id,
        submission_id=iv.submission_id,
        version=iv.version,
        members=[
            ProfileMember(
                age=age_in_years(m, day), sex=m.sex, relationship=m.relationship, pregnant=m.pregnant,
                school=m.school, highest_diploma=m.highest_diploma, worked_last_week=m.worked_last_week,
                industry=m.industry, job_status=m.job_status, difficulty=m.difficulty, line_no=line_no,
            )
            for line_no, m in enumerate(members, start=1) if m.presence.resident
        ],
        housing=ProfileHousing(
            floor_area_m2=h.floor_area_m2, floor=h.floor, wall=h.wall, roof=h.roof,
            drinking_water=h.drinking_water, lighting=h.lighting, installed_power=h.installed_power,
            cooking_fuel=h.cooking_fuel, toilet=h.toilet, faeces_disposal=h.faeces_disposal,
        ),
        economy=ProfileEconomy(assets=list(e.assets), livestock=e.livestock, internet_access=e.internet_access,
                               bank_account=e.bank_account),
    )
