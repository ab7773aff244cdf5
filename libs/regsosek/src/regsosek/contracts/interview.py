"""The family interview, form REGSOSEK22-K (one per family, keluarga).

Coded answers are enumerations whose values are stable wire codes; each member's
docstring-style comment gives the field meaning. Producers validate strictly
(`extra="forbid"`); consumers tolerate unknown fields (see `regsosek.events`).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from regsosek.contracts.base import Contract
from regsosek.contracts.identifiers import KkNumber, Nik, SlsId, SubmissionId

# ---------------------------------------------------------------- Block III housing


class Tenure(StrEnum):
    OWNED = "owned"  # milik sendiri
    CONTRACT_OR_RENT = "rented"  # kontrak/sewa
    RENT_FREE = "rent_free"  # bebas sewa
    OFFICIAL = "official"  # dinas
    OTHER = "other"


class FloorMaterial(StrEnum):
    MARBLE_GRANITE = "marble_granite"
    CERAMIC = "ceramic"
    PARQUET_VINYL = "parquet_vinyl"
    TILE_TERRAZZO = "tile_terrazzo"
    WOOD_PLANK = "wood_plank"
    CEMENT_BRICK = "cement_brick"
    BAMBOO = "bamboo"
    EARTH = "earth"  # tanah
    OTHER = "other"


class WallMaterial(StrEnum):
    MASONRY = "masonry"  # tembok
    PLASTER_WOVEN_BAMBOO = "plaster_woven_bamboo"
    WOOD_BOARD = "wood_board"
    WOVEN_BAMBOO = "woven_bamboo"
    LOG = "log"
    BAMBOO = "bamboo"
    OTHER = "other"


class RoofMaterial(StrEnum):
    CONCRETE = "concrete"
    CLAY_TILE = "clay_tile"
    ASBESTOS = "asbestos"
    ZINC = "zinc"  # seng
    BAMBOO = "bamboo"
    WOOD_SHINGLE = "wood_shingle"
    THATCH = "thatch"  # jerami/ijuk/daun-daunan/rumbia
    OTHER = "other"


class WaterSource(StrEnum):
    BOTTLED = "bottled"
    REFILL = "refill"  # air isi ulang
    PIPED = "piped"  # leding
    DRILLED_WELL = "drilled_well"
    PROTECTED_WELL = "protected_well"
    UNPROTECTED_WELL = "unprotected_well"
    PROTECTED_SPRING = "protected_spring"
    UNPROTECTED_SPRING = "unprotected_spring"
    SURFACE = "surface"  # river, lake, reservoir
    RAIN = "rain"
    OTHER = "other"


class LightingSource(StrEnum):
    PLN_METERED = "pln_metered"
    PLN_UNMETERED = "pln_unmetered"
    NON_PLN = "non_pln"
    NONE = "none"


class InstalledPower(StrEnum):
    VA_450 = "450"
    VA_900 = "900"
    VA_1300 = "1300"
    VA_2200 = "2200"
    ABOVE_2200 = ">2200"


class CookingFuel(StrEnum):
    ELECTRICITY = "electricity"
    LPG_5_5_KG_OR_MORE = "lpg_large"  # LPG 5.5 kg / 12 kg
    LPG_3_KG = "lpg_3kg"  # subsidised
    BIOGAS = "biogas"
    KEROSENE = "kerosene"
    CHARCOAL_BRIQUETTE = "charcoal"
    WOOD = "wood"
    NONE = "none"  # does not cook at home
    OTHER = "other"


class ToiletFacility(StrEnum):
    OWN = "own"
    SHARED = "shared"  # with certain households
    PUBLIC = "public"
    NONE = "none"


class FaecesDisposal(StrEnum):
    SEPTIC_TANK = "septic_tank"
    WASTEWATER_TREATMENT = "ipal"
    PIT = "pit"
    OPEN = "open"  # pond, river, field, beach
    OTHER = "other"


class Housing(Contract):
    """Block III: keterangan perumahan."""

    tenure: Tenure
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

    @model_validator(mode="after")
    def _power_only_with_pln(self) -> Housing:
        if self.lighting in (LightingSource.PLN_METERED, LightingSource.PLN_UNMETERED):
            if self.installed_power is None:
                raise ValueError("installed_power is required when lighting is from PLN")
        elif self.installed_power is not None:
            raise ValueError("installed_power applies only to PLN electricity")
        return self


# ---------------------------------------------------------------- Block IV members


class Sex(StrEnum):
    MALE = "male"
    FEMALE = "female"


class Relationship(StrEnum):
    HEAD = "head"  # kepala keluarga
    SPOUSE = "spouse"
    CHILD = "child"  # including step/adopted
    CHILD_IN_LAW = "child_in_law"
    GRANDCHILD = "grandchild"
    PARENT_OR_IN_LAW = "parent"
    OTHER_RELATIVE = "other_relative"
    OTHER = "other"


class MaritalStatus(StrEnum):
    NEVER_MARRIED = "never_married"
    MARRIED = "married"
    DIVORCED = "divorced"
    WIDOWED = "widowed"


class SchoolParticipation(StrEnum):
    NEVER = "never"
    ATTENDING = "attending"
    NOT_ANYMORE = "not_anymore"


class Diploma(StrEnum):
    NONE = "none"
    SD = "sd"  # primary
    SMP = "smp"  # junior secondary
    SMA = "sma"  # senior secondary / vocational
    D1_D3 = "d1_d3"
    D4_S1 = "d4_s1"
    S2_S3 = "s2_s3"


class JobStatus(StrEnum):
    SELF_EMPLOYED = "self_employed"
    EMPLOYER_WITH_TEMPORARY = "employer_temporary"
    EMPLOYER_WITH_PERMANENT = "employer_permanent"
    EMPLOYEE = "employee"
    CASUAL_WORKER = "casual"
    UNPAID_FAMILY_WORKER = "family_worker"


class Industry(StrEnum):
    AGRICULTURE = "agriculture"  # incl. forestry, fishery
    MINING = "mining"
    MANUFACTURING = "manufacturing"
    CONSTRUCTION = "construction"
    TRADE = "trade"
    TRANSPORT = "transport"
    ACCOMMODATION_FOOD = "accommodation_food"
    PUBLIC_ADMINISTRATION = "public_administration"
    EDUCATION = "education"
    HEALTH = "health"
    OTHER_SERVICES = "other_services"


class DifficultyLevel(StrEnum):
    NONE = "none"
    SOME = "some"
    A_LOT = "a_lot"
    CANNOT = "cannot"


class HealthInsurance(StrEnum):
    NONE = "none"
    PBI_JKN = "pbi_jkn"  # subsidised
    JKN_PAID = "jkn_paid"
    OTHER = "other"


class Member(Contract):
    """Block IV: keterangan anggota keluarga."""

    line_no: Annotated[int, Field(ge=1, le=99)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=120, strip_whitespace=True)]
    nik: Nik | None = None  # members without a NIK exist (newborns, undocumented)
    sex: Sex
    date_of_birth: date
    relationship: Relationship
    marital_status: MaritalStatus
    pregnant: bool = False
    school: SchoolParticipation
    highest_diploma: Diploma
    worked_last_week: bool
    hours_worked: Annotated[int, Field(ge=0, le=168)] = 0
    industry: Industry | None = None
    job_status: JobStatus | None = None
    has_business: bool = False
    difficulty: DifficultyLevel = DifficultyLevel.NONE  # worst functional difficulty across domains
    chronic_disease: bool = False
    health_insurance: HealthInsurance = HealthInsurance.NONE

    @model_validator(mode="after")
    def _coherent(self) -> Member:
        if self.pregnant and self.sex is not Sex.FEMALE:
            raise ValueError("only a female member can be pregnant")
        if not self.worked_last_week and (self.hours_worked or self.job_status or self.industry):
            raise ValueError("hours_worked, industry and job_status apply only to members who worked")
        return self

    def age_on(self, day: date) -> int:
        years = day.year - self.date_of_birth.year
        if (day.month, day.day) < (self.date_of_birth.month, self.date_of_birth.day):
            years -= 1
        return years


# ---------------------------------------------------------------- Block V family


class Programme(StrEnum):
    SEMBAKO = "sembako"  # BPNT food aid
    PKH = "pkh"
    BLT_DESA = "blt_desa"
    ELECTRICITY_SUBSIDY = "electricity_subsidy"
    REGIONAL_AID = "regional_aid"
    FERTILISER_SUBSIDY = "fertiliser_subsidy"
    LPG_SUBSIDY = "lpg_subsidy"


class Asset(StrEnum):
    GAS_CYLINDER_5_5KG = "gas_cylinder_5_5kg"
    REFRIGERATOR = "refrigerator"
    AIR_CONDITIONER = "air_conditioner"
    WATER_HEATER = "water_heater"
    LANDLINE = "landline"
    FLAT_TV = "flat_tv"  # >= 30 inch
    GOLD_10G = "gold_10g"
    COMPUTER = "computer"
    MOTORBIKE = "motorbike"
    BICYCLE = "bicycle"
    CAR = "car"
    BOAT = "boat"
    MOTORBOAT = "motorboat"
    SMARTPHONE = "smartphone"
    OTHER_LAND = "other_land"
    OTHER_HOUSE = "other_house"


class Livestock(Contract):
    cattle: Annotated[int, Field(ge=0, le=10_000)] = 0
    buffalo: Annotated[int, Field(ge=0, le=10_000)] = 0
    horse: Annotated[int, Field(ge=0, le=10_000)] = 0
    pig: Annotated[int, Field(ge=0, le=10_000)] = 0
    goat_sheep: Annotated[int, Field(ge=0, le=10_000)] = 0


class FamilyEconomy(Contract):
    """Block V: programmes received Oct 2021 - Oct 2022, assets, internet, bank."""

    programmes_received: list[Programme] = Field(default_factory=list, max_length=len(Programme))
    assets: list[Asset] = Field(default_factory=list, max_length=len(Asset))
    livestock: Livestock = Field(default_factory=Livestock)
    internet_access: bool = False
    bank_account: bool = False

    @field_validator("programmes_received", "assets")
    @classmethod
    def _no_repeats(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("each code may appear once")
        return v


# ---------------------------------------------------------------- Block I + the form


class Gps(Contract):
    lat: Annotated[float, Field(ge=-11.5, le=6.5)]  # Indonesia's extent
    lon: Annotated[float, Field(ge=94.5, le=141.5)]


class Location(Contract):
    """Block I: pengenalan tempat."""

    sls_id: SlsId
    sub_sls: Annotated[str, StringConstraints(pattern=r"^\d{2}$")] = "00"
    building_no: Annotated[int, Field(ge=1, le=9999)]  # nomor urut bangunan (WS sketch map)
    family_no: Annotated[int, Field(ge=1, le=999)]  # nomor urut keluarga (VK1)
    kk_number: KkNumber | None = None  # a married person without a KK is a family too
    address: Annotated[str, StringConstraints(max_length=300)] = ""
    gps: Gps | None = None

    @property
    def family_id(self) -> str:
        return family_id(self.sls_id, self.building_no, self.family_no)


def family_id(sls_id: str, building_no: int, family_no: int) -> str:
    """The family's key in the system: SLS + building serial + family serial."""
    return f"{sls_id}-{building_no:04d}-{family_no:03d}"


class FamilyInterview(Contract):
    """Form REGSOSEK22-K: one family's interview as submitted by the officer's device."""

    submission_id: SubmissionId
    version: Annotated[int, Field(ge=1, le=1000)] = 1  # a correction of the same family gets a higher version
    officer_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    interviewed_at: datetime
    location: Location
    housing: Housing
    members: Annotated[list[Member], Field(min_length=1, max_length=40)]
    economy: FamilyEconomy = Field(default_factory=FamilyEconomy)

    @property
    def family_id(self) -> str:
        return self.location.family_id

    @property
    def head(self) -> Member | None:
        return next((m for m in self.members if m.relationship is Relationship.HEAD), None)
