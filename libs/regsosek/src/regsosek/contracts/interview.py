"""The family interview, form REGSOSEK22-K (one per family, keluarga).

Coded answers are enumerations whose values are stable wire codes; each member's
docstring-style comment gives the field meaning. Producers validate strictly
(`extra="forbid"`); consumers tolerate unknown fields (`regsosek.envelope.decode`).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, TypeVar

from pydantic import Field, StringConstraints, field_validator, model_validator

from regsosek.contracts.base import Contract
from regsosek.contracts.identifiers import KkNumber, Nik, SlsId, SubmissionId, SubSls

# ---------------------------------------------------------------- Block III housing


class Tenure(StrEnum):
    """Status of the dwelling (status penguasaan bangunan): owned = milik sendiri; rented = kontrak/sewa; rent_free =
    bebas sewa; official = dinas; other = lainnya."""

    OWNED = "owned"  # milik sendiri
    CONTRACT_OR_RENT = "rented"  # kontrak/sewa
    RENT_FREE = "rent_free"  # bebas sewa
    OFFICIAL = "official"  # dinas
    OTHER = "other"


class LandTitle(StrEnum):
    """Land title of an owned dwelling: shm = sertifikat hak milik; shgb = hak guna bangunan; other_letter = girik/letter
    C/other proof; none = no document."""

    SHM = "shm"
    SHGB = "shgb"
    OTHER_LETTER = "other_letter"
    NONE = "none"


class FloorMaterial(StrEnum):
    """Main floor material (jenis lantai terluas): marble_granite; ceramic; parquet_vinyl = parket/vinil/karpet;
    tile_terrazzo = ubin/tegel/teraso; wood_plank = kayu/papan; cement_brick = semen/bata merah; bamboo; earth =
    tanah; other."""

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
    """Main wall material (dinding terluas): masonry = tembok; plaster_woven_bamboo = plesteran anyaman bambu/kawat;
    wood_board = kayu/papan/gypsum/GRC; woven_bamboo = anyaman bambu; log = batang kayu; bamboo; other."""

    MASONRY = "masonry"  # tembok
    PLASTER_WOVEN_BAMBOO = "plaster_woven_bamboo"
    WOOD_BOARD = "wood_board"
    WOVEN_BAMBOO = "woven_bamboo"
    LOG = "log"
    BAMBOO = "bamboo"
    OTHER = "other"


class RoofMaterial(StrEnum):
    """Main roof material (atap terluas): concrete = beton; clay_tile = genteng; asbestos; zinc = seng; bamboo;
    wood_shingle = kayu/sirap; thatch = jerami/ijuk/daun/rumbia; other."""

    CONCRETE = "concrete"
    CLAY_TILE = "clay_tile"
    ASBESTOS = "asbestos"
    ZINC = "zinc"  # seng
    BAMBOO = "bamboo"
    WOOD_SHINGLE = "wood_shingle"
    THATCH = "thatch"  # jerami/ijuk/daun-daunan/rumbia
    OTHER = "other"


class WaterSource(StrEnum):
    """Main drinking-water source: bottled = air kemasan bermerk; refill = air isi ulang; piped = leding; drilled_well =
    sumur bor/pompa; protected_well; unprotected_well; protected_spring; unprotected_spring; surface = river, lake,
    reservoir; rain = air hujan; other."""

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
    """Main lighting source: pln_metered = PLN electricity with a meter; pln_unmetered = PLN without a meter; non_pln =
    generator, solar, village grid; none = no electricity."""

    PLN_METERED = "pln_metered"
    PLN_UNMETERED = "pln_unmetered"
    NON_PLN = "non_pln"
    NONE = "none"


class InstalledPower(StrEnum):
    """Installed PLN power (daya terpasang) in volt-ampere: 450, 900, 1300, 2200, >2200."""

    VA_450 = "450"
    VA_900 = "900"
    VA_1300 = "1300"
    VA_2200 = "2200"
    ABOVE_2200 = ">2200"


class CookingFuel(StrEnum):
    """Main cooking fuel: electricity; lpg_large = LPG 5.5 kg or 12 kg; lpg_3kg = subsidised 3 kg LPG; biogas; kerosene =
    minyak tanah; charcoal = arang/briket; wood = kayu bakar; none = does not cook at home; other."""

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
    """Defecation facility (fasilitas BAB): own = sole use of the household; shared = with certain households; public =
    umum; none = tidak ada."""

    OWN = "own"
    SHARED = "shared"  # with certain households
    PUBLIC = "public"
    NONE = "none"


class ToiletType(StrEnum):
    """Type of the toilet bowl (jenis kloset): gooseneck = leher angsa (1); plengsengan = plengsengan with a lid (2);
    plengsengan_open = plengsengan without a lid (3); cemplung = cemplung/cubluk, a drop pit (4). Asked when the
    family has a defecation facility."""

    GOOSENECK = "gooseneck"  # leher angsa (1)
    PLENGSENGAN = "plengsengan"  # with a lid (2)
    PLENGSENGAN_OPEN = "plengsengan_open"  # without a lid (3)
    CEMPLUNG = "cemplung"  # cemplung/cubluk (4)


class SepticDistance(StrEnum):
    """Distance from the drinking-water source to the septic tank or faeces pit: lt_10m = under 10 m (1); ge_10m = 10 m
    or more (2); dont_know = tidak tahu (3)."""

    LT_10M = "lt_10m"
    GE_10M = "ge_10m"
    DONT_KNOW = "dont_know"


class FaecesDisposal(StrEnum):
    """Final disposal of faeces: septic_tank = tangki septik; ipal = wastewater treatment plant; pit = lubang tanah; open
    = pond, river, field, beach; other."""

    SEPTIC_TANK = "septic_tank"
    WASTEWATER_TREATMENT = "ipal"
    PIT = "pit"
    OPEN = "open"  # pond, river, field, beach
    OTHER = "other"


class Housing(Contract):
    """Block III: keterangan perumahan."""

    tenure: Tenure
    land_title: LandTitle | None = None  # asked when the dwelling is owned
    floor_area_m2: Annotated[float, Field(gt=0, le=10_000)]
    floor: FloorMaterial
    wall: WallMaterial
    roof: RoofMaterial
    drinking_water: WaterSource
    lighting: LightingSource
    installed_power: InstalledPower | None = None
    cooking_fuel: CookingFuel
    toilet: ToiletFacility
    toilet_type: ToiletType | None = None  # asked when there is a facility
    faeces_disposal: FaecesDisposal
    septic_distance: SepticDistance | None = None  # asked when faeces go to a septic tank or a pit

    @model_validator(mode="after")
    def _power_only_with_pln(self) -> Housing:
        if self.toilet_type is not None and self.toilet is ToiletFacility.NONE:
            raise ValueError("toilet_type applies only when there is a defecation facility")
        if self.septic_distance is not None and self.faeces_disposal not in (FaecesDisposal.SEPTIC_TANK,
                                                                             FaecesDisposal.PIT):
            raise ValueError("septic_distance applies only to a septic tank or a pit")
        if self.land_title is not None and self.tenure is not Tenure.OWNED:
            raise ValueError("land_title applies only to an owned dwelling")
        if self.lighting in (LightingSource.PLN_METERED, LightingSource.PLN_UNMETERED):
            if self.installed_power is None:
                raise ValueError("installed_power is required when lighting is from PLN")
        elif self.installed_power is not None:
            raise ValueError("installed_power applies only to PLN electricity")
        return self


# ---------------------------------------------------------------- Block IV members


class Sex(StrEnum):
    """Sex (jenis kelamin): male; female."""

    MALE = "male"
    FEMALE = "female"


class Relationship(StrEnum):
    """Relationship to the family head (form item 406, code in brackets): head = kepala keluarga (1); spouse =
    istri/suami (2); child = anak, incl. step/adopted (3); child_in_law = menantu (4); grandchild = cucu (5); parent =
    orang tua/mertua (6); domestic_worker = household helper or driver, pembantu/sopir (7); other = lainnya (8);
    other_relative = famili lain, an earlier code of this system kept so that earlier submissions stay valid (the
    form counts other relatives under 8)."""

    HEAD = "head"  # kepala keluarga (1)
    SPOUSE = "spouse"  # (2)
    CHILD = "child"  # including step/adopted (3)
    CHILD_IN_LAW = "child_in_law"  # (4)
    GRANDCHILD = "grandchild"  # (5)
    PARENT_OR_IN_LAW = "parent"  # (6)
    DOMESTIC_WORKER = "domestic_worker"  # pembantu/sopir (7)
    OTHER = "other"  # lainnya (8)
    OTHER_RELATIVE = "other_relative"  # earlier code; the form counts it under 8


class MemberPresence(StrEnum):
    """Member presence (keberadaan anggota keluarga, item 404), against the prelisted family: lives_here = tinggal
    bersama keluarga (1); died = meninggal (2); moved_within_indonesia = pindah dalam negeri (3); moved_abroad =
    pindah ke luar negeri (4); new_member = anggota keluarga baru (5); not_found = tidak ditemukan (6). Members coded
    2, 3, 4 or 6 were on the prelist but no longer live with the family: they explain a member count that differs
    from the roster and are left out of the household's size."""

    LIVES_HERE = "lives_here"  # (1)
    DIED = "died"  # (2)
    MOVED_WITHIN_INDONESIA = "moved_within_indonesia"  # (3)
    MOVED_ABROAD = "moved_abroad"  # (4)
    NEW_MEMBER = "new_member"  # (5)
    NOT_FOUND = "not_found"  # (6)

    @property
    def resident(self) -> bool:
        """Lives with the family now (counted in the household)."""
        return self in (MemberPresence.LIVES_HERE, MemberPresence.NEW_MEMBER)

    @property
    def prelisted(self) -> bool:
        """Was one of the prelisted family's members (everyone but a new member)."""
        return self is not MemberPresence.NEW_MEMBER


class MaritalStatus(StrEnum):
    """Marital status: never_married = belum kawin; married = kawin; divorced = cerai hidup; widowed = cerai mati."""

    NEVER_MARRIED = "never_married"
    MARRIED = "married"
    DIVORCED = "divorced"
    WIDOWED = "widowed"


class SchoolParticipation(StrEnum):
    """School participation: never = tidak/belum pernah sekolah; attending = masih sekolah; not_anymore = tidak
    bersekolah lagi."""

    NEVER = "never"
    ATTENDING = "attending"
    NOT_ANYMORE = "not_anymore"


class SchoolLevel(StrEnum):
    """Level of the school attended now, or last attended (jenjang pendidikan): paud = early childhood (PAUD/TK/RA);
    sd = primary (SD/MI/SDLB/Paket A); smp = junior secondary (SMP/MTs/SMPLB/Paket B); sma = senior secondary (SMA/MA/
    SMALB/Paket C); smk = vocational secondary (SMK/MAK); d1_d3 = diploma I-III; d4_s1 = diploma IV / bachelor;
    s2_s3 = master or doctorate."""

    PAUD = "paud"
    SD = "sd"
    SMP = "smp"
    SMA = "sma"
    SMK = "smk"
    D1_D3 = "d1_d3"
    D4_S1 = "d4_s1"
    S2_S3 = "s2_s3"


class Diploma(StrEnum):
    """Highest diploma held (ijazah/STTB tertinggi yang dimiliki), in the order of the Indonesian school system
    (docs/FORM.md): none = no diploma, tidak punya ijazah (also: left primary school before finishing it); sd =
    primary, SD/MI/Paket A/SDLB; smp = junior secondary, SMP/MTs/Paket B/SMPLB; sma = general senior secondary,
    SMA/MA/Paket C/SMLB; smk = vocational senior secondary, SMK/MAK; d1_d2 = diploma I or II; d3 = diploma III
    (sarjana muda); d4_s1 = diploma IV or bachelor (S1); s2 = master (S2, incl. applied and professional); s3 =
    doctorate (S3). Earlier codes of this system, still accepted: d1_d3 = diploma I-III, s2_s3 = master or
    doctorate (before smk existed, vocational senior secondary was coded sma)."""

    NONE = "none"  # tidak punya ijazah
    SD = "sd"  # SD/MI/Paket A/SDLB
    SMP = "smp"  # SMP/MTs/Paket B/SMPLB
    SMA = "sma"  # SMA/MA/Paket C/SMLB
    SMK = "smk"  # SMK/MAK
    D1_D2 = "d1_d2"
    D3 = "d3"
    D4_S1 = "d4_s1"
    S2 = "s2"
    S3 = "s3"
    D1_D3 = "d1_d3"  # earlier code: diploma I-III
    S2_S3 = "s2_s3"  # earlier code: master or doctorate

    @property
    def senior_secondary(self) -> bool:
        """A senior secondary diploma, general or vocational (SMA/MA/Paket C/SMLB, SMK/MAK)."""
        return self in (Diploma.SMA, Diploma.SMK)

    @property
    def tertiary(self) -> bool:
        """A higher-education diploma (D1 to S3, the earlier codes included)."""
        return self in _TERTIARY


_TERTIARY = frozenset({Diploma.D1_D2, Diploma.D3, Diploma.D4_S1, Diploma.S2, Diploma.S3, Diploma.D1_D3,
                       Diploma.S2_S3})


class JobStatus(StrEnum):
    """Status in main job: self_employed = berusaha sendiri; employer_temporary = with temporary/unpaid workers;
    employer_permanent = with permanent paid workers; employee = buruh/karyawan/pegawai swasta (private employee);
    civil_servant = PNS/TNI/Polri/BUMN/BUMD/pejabat negara (civil servant, military, police, state enterprise or state
    official); casual = pekerja bebas; family_worker = pekerja keluarga/tidak dibayar."""

    SELF_EMPLOYED = "self_employed"
    EMPLOYER_WITH_TEMPORARY = "employer_temporary"
    EMPLOYER_WITH_PERMANENT = "employer_permanent"
    EMPLOYEE = "employee"
    CIVIL_SERVANT = "civil_servant"  # PNS/TNI/Polri/BUMN/BUMD/pejabat negara
    CASUAL_WORKER = "casual"
    UNPAID_FAMILY_WORKER = "family_worker"


class Industry(StrEnum):
    """Industry (lapangan usaha) of the main job, and of an own business: the KBLI 2020 sections A-U with section A
    split into its six agricultural sub-sectors (docs/FORM.md). food_crops = padi dan palawija, rice and secondary
    food crops (A); horticulture = hortikultura, vegetables, fruit, ornamental and medicinal plants (A); plantation =
    perkebunan, e.g. oil palm, rubber, coconut, cocoa (A); fisheries = perikanan, capture and aquaculture (A);
    livestock = peternakan (A); forestry_other_agriculture = kehutanan dan pertanian lainnya, forestry, hunting and
    agricultural services (A); mining = pertambangan dan penggalian (B); manufacturing = industri pengolahan (C);
    electricity_gas = pengadaan listrik, gas, uap/air panas dan udara dingin (D); water_waste = pengelolaan air, air
    limbah dan daur ulang sampah, remediasi (E); construction = konstruksi (F); trade = perdagangan besar dan eceran,
    reparasi mobil dan sepeda motor (G); transport = pengangkutan dan pergudangan (H); accommodation_food =
    penyediaan akomodasi dan makan minum (I); information_communication = informasi dan komunikasi (J);
    finance_insurance = jasa keuangan dan asuransi (K); real_estate = real estat (L); professional_services =
    jasa profesional, ilmiah dan teknis (M); business_support = jasa persewaan, ketenagakerjaan, agen perjalanan dan
    penunjang usaha lainnya (N); public_administration = administrasi pemerintahan, pertahanan dan jaminan sosial
    wajib (O); education = jasa pendidikan (P); health = jasa kesehatan dan kegiatan sosial (Q); arts_recreation =
    kesenian, hiburan dan rekreasi (R); other_services = kegiatan jasa lainnya (S); households_as_employers = jasa
    perorangan yang melayani rumah tangga, kegiatan rumah tangga sebagai pemberi kerja, e.g. a domestic worker or
    driver (T); extraterritorial = badan internasional dan badan ekstra internasional (U). Earlier code of this
    system, still accepted: agriculture = any of section A (before its split; other_services then stood for
    sections D, E, J-N, R-U as well)."""

    FOOD_CROPS = "food_crops"  # A: padi dan palawija
    HORTICULTURE = "horticulture"  # A
    PLANTATION = "plantation"  # A: perkebunan
    FISHERIES = "fisheries"  # A
    LIVESTOCK = "livestock"  # A: peternakan
    FORESTRY_OTHER_AGRICULTURE = "forestry_other_agriculture"  # A: kehutanan dan pertanian lainnya
    MINING = "mining"  # B
    MANUFACTURING = "manufacturing"  # C
    ELECTRICITY_GAS = "electricity_gas"  # D
    WATER_WASTE = "water_waste"  # E
    CONSTRUCTION = "construction"  # F
    TRADE = "trade"  # G
    TRANSPORT = "transport"  # H
    ACCOMMODATION_FOOD = "accommodation_food"  # I
    INFORMATION_COMMUNICATION = "information_communication"  # J
    FINANCE_INSURANCE = "finance_insurance"  # K
    REAL_ESTATE = "real_estate"  # L
    PROFESSIONAL_SERVICES = "professional_services"  # M
    BUSINESS_SUPPORT = "business_support"  # N
    PUBLIC_ADMINISTRATION = "public_administration"  # O
    EDUCATION = "education"  # P
    HEALTH = "health"  # Q: health and social work
    ARTS_RECREATION = "arts_recreation"  # R
    OTHER_SERVICES = "other_services"  # S
    HOUSEHOLDS_AS_EMPLOYERS = "households_as_employers"  # T
    EXTRATERRITORIAL = "extraterritorial"  # U
    AGRICULTURE = "agriculture"  # earlier code: any of section A

    @property
    def kbli_section(self) -> str:
        """The KBLI 2020 section letter (A-U)."""
        return _KBLI_SECTION[self]

    @property
    def agricultural(self) -> bool:
        """Agriculture, forestry or fishing (KBLI section A), whichever sub-sector."""
        return self.kbli_section == "A"


_KBLI_SECTION: dict[Industry, str] = {
    **dict.fromkeys((Industry.FOOD_CROPS, Industry.HORTICULTURE, Industry.PLANTATION, Industry.FISHERIES,
                     Industry.LIVESTOCK, Industry.FORESTRY_OTHER_AGRICULTURE, Industry.AGRICULTURE), "A"),
    Industry.MINING: "B", Industry.MANUFACTURING: "C", Industry.ELECTRICITY_GAS: "D", Industry.WATER_WASTE: "E",
    Industry.CONSTRUCTION: "F", Industry.TRADE: "G", Industry.TRANSPORT: "H", Industry.ACCOMMODATION_FOOD: "I",
    Industry.INFORMATION_COMMUNICATION: "J", Industry.FINANCE_INSURANCE: "K", Industry.REAL_ESTATE: "L",
    Industry.PROFESSIONAL_SERVICES: "M", Industry.BUSINESS_SUPPORT: "N", Industry.PUBLIC_ADMINISTRATION: "O",
    Industry.EDUCATION: "P", Industry.HEALTH: "Q", Industry.ARTS_RECREATION: "R", Industry.OTHER_SERVICES: "S",
    Industry.HOUSEHOLDS_AS_EMPLOYERS: "T", Industry.EXTRATERRITORIAL: "U",
}

# Codes of this system from before the form's full lists: still accepted, no longer produced (docs/FORM.md).
EARLIER_CODES: frozenset[StrEnum] = frozenset({Diploma.D1_D3, Diploma.S2_S3, Industry.AGRICULTURE})


E = TypeVar("E", bound=StrEnum)


def current_codes(codes: type[E]) -> list[E]:
    """A code list as the form has it, without this system's earlier codes."""
    return [c for c in codes if c not in EARLIER_CODES]


class DifficultyLevel(StrEnum):
    """Degree of functional difficulty in a domain, the Washington Group scale in its order 1-4 (docs/FORM.md): none
    = no difficulty, tidak mengalami kesulitan; some = some difficulty, sedikit kesulitan; a_lot = a lot of
    difficulty, banyak kesulitan; cannot = cannot do it at all, tidak bisa sama sekali. A lot of difficulty or
    cannot, in any domain, is a disability (disabilitas)."""

    NONE = "none"  # 1
    SOME = "some"  # 2
    A_LOT = "a_lot"  # 3
    CANNOT = "cannot"  # 4

    @property
    def disability(self) -> bool:
        """A lot of difficulty, or cannot at all: a disability in the Washington Group sense."""
        return self in (DifficultyLevel.A_LOT, DifficultyLevel.CANNOT)


class HealthInsurance(StrEnum):
    """Health insurance held: none; pbi_jkn = JKN with premium paid by the state (PBI); jkn_paid = JKN paid by self or
    employer; other = private or other."""

    NONE = "none"
    PBI_JKN = "pbi_jkn"  # subsidised
    JKN_PAID = "jkn_paid"
    OTHER = "other"


class IdDocument(StrEnum):
    """Identity document held: ktp = electronic/other KTP; kia = child identity card; birth_certificate = akta kelahiran
    only; none."""

    KTP = "ktp"
    KIA = "kia"
    BIRTH_CERTIFICATE = "birth_certificate"
    NONE = "none"


class TurnoverBand(StrEnum):
    """Monthly business turnover (omzet): lt_5m = under Rp5 million; 5m_15m; 15m_25m; 25m_50m; 50m_plus = Rp50 million or more."""

    LT_5M = "lt_5m"
    FROM_5M_TO_15M = "5m_15m"
    FROM_15M_TO_25M = "15m_25m"
    FROM_25M_TO_50M = "25m_50m"
    FROM_50M = "50m_plus"


class Business(Contract):
    """The member's own business (usaha sendiri)."""

    workers: Annotated[int, Field(ge=0, le=10_000)] = 0  # paid and unpaid, excluding the owner
    paid_workers: Annotated[int, Field(ge=0, le=10_000)] | None = None  # of `workers`, those paid
    industry: Industry | None = None  # the business's industry (lapangan usaha), on the same list as a job's
    licensed: bool = False  # NIB/IUMK or other permit
    turnover: TurnoverBand
    uses_internet: bool = False  # for marketing or sales

    @model_validator(mode="after")
    def _paid_among_workers(self) -> Business:
        if self.paid_workers is not None and self.paid_workers > self.workers:
            raise ValueError("paid_workers cannot exceed workers")
        return self


class Under5Nutrition(StrEnum):
    """Nutrition of a child under five as the form codes it from the growth record (KMS/buku KIA): wasted = gizi
    kurang/buruk, wasting; stunted = pendek, stunting; not_recorded = no record (tidak ada catatan); dont_know = tidak
    tahu; normal and underweight are earlier codes of this system, kept so that earlier submissions stay valid."""

    WASTED = "wasted"  # wasting
    STUNTED = "stunted"  # stunting
    NOT_RECORDED = "not_recorded"  # no record
    DONT_KNOW = "dont_know"
    NORMAL = "normal"  # earlier code
    UNDERWEIGHT = "underweight"  # earlier code


# The age (completed years at the interview) from which each functional-difficulty domain is asked
# (docs/FORM.md): the six domains a young child's functioning is assessed by from age 2, remembering or
# concentrating and self-care from age 5, as the Washington Group's child functioning questions do.
DIFFICULTY_MIN_AGE: dict[str, int] = {
    "seeing": 2, "hearing": 2, "walking": 2, "using_hands": 2, "communicating": 2, "behaviour": 2,
    "remembering": 5, "self_care": 5,
}
DIFFICULTY_ASKED_FROM = min(DIFFICULTY_MIN_AGE.values())  # the question block is skipped below this age


class FunctionalDifficulties(Contract):
    """Difficulty in each functional domain (kesulitan fungsional), each on the Washington Group scale
    (DifficultyLevel), asked from the age docs/FORM.md gives: seeing (even with glasses), hearing (even with a
    hearing aid), walking or climbing stairs, using hands and fingers, communicating (understanding and being
    understood), behaviour (behavioural or emotional difficulty): from age 2; remembering or concentrating, self-care
    (washing, dressing, eating): from age 5. A difficulty other than none for a younger member is refused (422)."""

    seeing: DifficultyLevel = DifficultyLevel.NONE  # melihat, from age 2
    hearing: DifficultyLevel = DifficultyLevel.NONE  # mendengar, from age 2
    walking: DifficultyLevel = DifficultyLevel.NONE  # berjalan atau naik tangga, from age 2
    using_hands: DifficultyLevel = DifficultyLevel.NONE  # menggunakan tangan/jari, from age 2
    remembering: DifficultyLevel = DifficultyLevel.NONE  # mengingat atau berkonsentrasi, from age 5
    communicating: DifficultyLevel = DifficultyLevel.NONE  # berbicara/berkomunikasi, from age 2
    self_care: DifficultyLevel = DifficultyLevel.NONE  # mengurus diri sendiri, from age 5
    behaviour: DifficultyLevel = DifficultyLevel.NONE  # perilaku/emosional, from age 2

    def worst(self) -> DifficultyLevel:
        order = list(DifficultyLevel)
        return max((getattr(self, f) for f in type(self).model_fields), key=order.index)

    def answered(self) -> dict[str, DifficultyLevel]:
        """The domains with a difficulty (other than none), in field order."""
        return {f: v for f in type(self).model_fields if (v := getattr(self, f)) is not DifficultyLevel.NONE}


class ChronicDisease(StrEnum):
    """Chronic diseases (penyakit kronis/menahun) the member has: hypertension; rheumatism; asthma; heart = heart
    disease; diabetes; tuberculosis; stroke; cancer; kidney_failure = gagal ginjal; haemophilia; hiv_aids;
    cholesterol; liver_cirrhosis; thalassaemia; leukaemia; alzheimer; other."""

    HYPERTENSION = "hypertension"
    RHEUMATISM = "rheumatism"
    ASTHMA = "asthma"
    HEART = "heart"
    DIABETES = "diabetes"
    TUBERCULOSIS = "tuberculosis"
    STROKE = "stroke"
    CANCER = "cancer"
    KIDNEY_FAILURE = "kidney_failure"
    HAEMOPHILIA = "haemophilia"
    HIV_AIDS = "hiv_aids"
    CHOLESTEROL = "cholesterol"
    LIVER_CIRRHOSIS = "liver_cirrhosis"
    THALASSAEMIA = "thalassaemia"
    LEUKAEMIA = "leukaemia"
    ALZHEIMER = "alzheimer"
    OTHER = "other"


class SocialSecurity(StrEnum):
    """Employment social security held (jaminan sosial ketenagakerjaan, several may apply): jkk = BPJS work-accident
    insurance (Jaminan Kecelakaan Kerja); jkm = death benefit (Jaminan Kematian); jht = old-age savings (Jaminan Hari
    Tua); jp = pension (Jaminan Pensiun); civil_pension = Taspen/Asabri pension of civil servants, military and
    police; private = private pension or insurance."""

    JKK = "jkk"
    JKM = "jkm"
    JHT = "jht"
    JP = "jp"
    CIVIL_PENSION = "civil_pension"
    PRIVATE = "private"


class MemberProgramme(StrEnum):
    """Other programmes the member takes part in: prakerja = Kartu Prakerja; kur = Kredit Usaha Rakyat; umi = Ultra Mikro
    credit; pip = Program Indonesia Pintar; employment_insurance = BPJS Ketenagakerjaan."""

    PRAKERJA = "prakerja"
    KUR = "kur"
    UMI = "umi"
    PIP = "pip"
    EMPLOYMENT_INSURANCE = "employment_insurance"


class Member(Contract):
    """Block IV: keterangan anggota keluarga."""

    line_no: Annotated[int, Field(ge=1, le=99)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=120, strip_whitespace=True)]
    nik: Nik | None = None  # members without a NIK exist (newborns, undocumented)
    presence: MemberPresence = MemberPresence.LIVES_HERE
    sex: Sex
    date_of_birth: date | None = None  # unknown to the family: then `age` is asked instead
    age: Annotated[int, Field(ge=0, le=150)] | None = None  # completed years, when the birth date is unknown
    relationship: Relationship
    marital_status: MaritalStatus
    pregnant: bool = False
    school: SchoolParticipation
    school_level: SchoolLevel | None = None  # attended now or last attended; not asked of those never in school
    school_class: Annotated[int, Field(ge=1, le=8)] | None = None  # highest class reached at that level (kelas)
    highest_diploma: Annotated[Diploma, Field(description="Highest diploma held (ijazah tertinggi): the codes of "
                                                          "Diploma, docs/FORM.md.")]
    has_npwp: bool | None = None  # holds a tax number (NPWP); the number itself is not collected
    worked_last_week: bool
    hours_worked: Annotated[int, Field(ge=0, le=168)] = 0
    industry: Annotated[Industry | None, Field(description="Industry of the main job (lapangan usaha): the codes of "
                                                          "Industry, docs/FORM.md; for members who worked.")] = None
    job_status: JobStatus | None = None
    id_document: IdDocument | None = None
    has_business: bool = False
    business: Business | None = None  # details when has_business
    difficulty: Annotated[DifficultyLevel, Field(
        description="The worst functional difficulty across the domains; asked of members aged 2 or more (a "
                    "difficulty other than none for a younger member is refused, docs/FORM.md).")] = DifficultyLevel.NONE
    difficulties: Annotated[FunctionalDifficulties | None, Field(
        description="The difficulty in each domain, when asked: seeing, hearing, walking, using hands, communicating "
                    "and behaviour from age 2; remembering and self-care from age 5 (docs/FORM.md).")] = None
    has_caregiver: bool | None = None  # asked of members aged 60+ or with a disability
    chronic_disease: bool = False
    chronic_diseases: list[ChronicDisease] = Field(default_factory=list, max_length=len(ChronicDisease))
    under5_nutrition: Under5Nutrition | None = None  # children under five only
    health_insurance: HealthInsurance = HealthInsurance.NONE
    social_security: list[SocialSecurity] = Field(default_factory=list, max_length=len(SocialSecurity))
    programmes: list[MemberProgramme] = Field(default_factory=list, max_length=len(MemberProgramme))

    @model_validator(mode="after")
    def _coherent(self) -> Member:
        check_member_lists(self.chronic_disease, self.chronic_diseases, self.social_security)
        check_schooling(self.school, self.school_level, self.school_class)
        if self.date_of_birth is None and self.age is None:
            raise ValueError("date_of_birth or, when it is unknown, age is required")
        if self.pregnant and self.sex is not Sex.FEMALE:
            raise ValueError("only a female member can be pregnant")
        if not self.worked_last_week and (self.hours_worked or self.job_status or self.industry):
            raise ValueError("hours_worked, industry and job_status apply only to members who worked")
        if self.business is not None and not self.has_business:
            raise ValueError("business details apply only when has_business is true")
        if self.difficulties is not None and self.difficulties.worst() is not self.difficulty:
            raise ValueError("difficulty must be the worst of the per-domain difficulties")
        if len(set(self.programmes)) != len(self.programmes):
            raise ValueError("each programme may appear once")
        return self

    def age_on(self, day: date) -> int:
        return completed_years(self.date_of_birth, self.age, day)


def check_member_lists(chronic: bool, diseases: list, social_security: list) -> None:
    if diseases and not chronic:
        raise ValueError("chronic_diseases apply only when chronic_disease is true")
    for name, codes in (("chronic_diseases", diseases), ("social_security", social_security)):
        if len(set(codes)) != len(codes):
            raise ValueError(f"each code of {name} may appear once")


def check_schooling(school: SchoolParticipation, level: SchoolLevel | None, school_class: int | None) -> None:
    if level is not None and school is SchoolParticipation.NEVER:
        raise ValueError("school_level applies only to members who attend or attended school")
    if school_class is not None and level is None:
        raise ValueError("school_class is given with its school_level")


def completed_years(date_of_birth: date | None, age: int | None, day: date) -> int:
    """Age in completed years on `day` (the interview date): from the birth date, or the age the
    family gave when the birth date is unknown."""
    if date_of_birth is None:
        return age if age is not None else 0
    years = day.year - date_of_birth.year
    if (day.month, day.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years


# ---------------------------------------------------------------- Block V family


class Programme(StrEnum):
    """Programmes the family received Oct 2021 - Oct 2022: sembako = Sembako/BPNT food aid; pkh = Program Keluarga
    Harapan; blt_desa = village cash aid; electricity_subsidy; regional_aid = bantuan pemerintah daerah;
    fertiliser_subsidy; lpg_subsidy = subsidised 3 kg LPG."""

    SEMBAKO = "sembako"  # BPNT food aid
    PKH = "pkh"
    BLT_DESA = "blt_desa"
    ELECTRICITY_SUBSIDY = "electricity_subsidy"
    REGIONAL_AID = "regional_aid"
    FERTILISER_SUBSIDY = "fertiliser_subsidy"
    LPG_SUBSIDY = "lpg_subsidy"


class Asset(StrEnum):
    """Assets the family owns: gas_cylinder_5_5kg = gas cylinder of 5.5 kg or more; refrigerator; air_conditioner;
    water_heater; landline; flat_tv = flat TV of at least 30 inch; gold_10g = gold/jewellery of at least 10 g;
    computer = computer/laptop/tablet; motorbike; bicycle; car; boat; motorboat; smartphone; other_land = land
    elsewhere; other_house = house elsewhere."""

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


class ProgrammeReceipt(Contract):
    """The month and year the family last received a programme (bulan dan tahun terakhir menerima)."""

    programme: Programme
    month: Annotated[int, Field(ge=1, le=12)]
    year: Annotated[int, Field(ge=2000, le=2100)]


class InternetType(StrEnum):
    """How the family reaches the internet (several may apply): fixed = fixed line or home wifi; mobile = mobile data;
    public_wifi = public or shared wifi."""

    FIXED = "fixed"
    MOBILE = "mobile"
    PUBLIC_WIFI = "public_wifi"


class AccountType(StrEnum):
    """Active accounts a family member holds (several may apply): bank; cooperative = koperasi; other_institution = other
    financial institution (pegadaian, microfinance); e_wallet = dompet digital."""

    BANK = "bank"
    COOPERATIVE = "cooperative"
    OTHER_INSTITUTION = "other_institution"
    E_WALLET = "e_wallet"


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
    last_receipts: list[ProgrammeReceipt] = Field(default_factory=list, max_length=len(Programme))
    internet_access: bool = False
    internet_types: list[InternetType] = Field(default_factory=list, max_length=len(InternetType))
    bank_account: bool = False  # an active account or e-wallet
    account_types: list[AccountType] = Field(default_factory=list, max_length=len(AccountType))

    @field_validator("programmes_received", "assets", "internet_types", "account_types")
    @classmethod
    def _no_repeats(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("each code may appear once")
        return v

    @model_validator(mode="after")
    def _details_follow_answers(self) -> FamilyEconomy:
        received = [r.programme for r in self.last_receipts]
        if len(set(received)) != len(received) or not set(received) <= set(self.programmes_received):
            raise ValueError("last_receipts: one per programme, and only for programmes received")
        if self.internet_types and not self.internet_access:
            raise ValueError("internet_types apply only when internet_access is true")
        if self.account_types and not self.bank_account:
            raise ValueError("account_types apply only when bank_account is true")
        return self


# ---------------------------------------------------------------- Block I + the form


class Gps(Contract):
    lat: Annotated[float, Field(ge=-11.5, le=6.5)]  # Indonesia's extent
    lon: Annotated[float, Field(ge=94.5, le=141.5)]


class KkStatus(StrEnum):
    """Status of the family's KK (item 115) against the prelist: as_prelisted = KK as on the prelist (1);
    parent_family = keluarga induk, the family a split-off family left (2); split_off = keluarga pecahan, a family
    split from a prelisted KK (3), matched to that KK on the roster (give `parent_kk_number`)."""

    AS_PRELISTED = "as_prelisted"  # (1)
    PARENT_FAMILY = "parent_family"  # keluarga induk (2)
    SPLIT_OFF = "split_off"  # keluarga pecahan (3)


def check_parent_kk(status: KkStatus, parent: object) -> None:
    if parent is not None and status is not KkStatus.SPLIT_OFF:
        raise ValueError("the parent family's KK applies only to a split-off family")


class Location(Contract):
    """Block I: pengenalan tempat."""

    sls_id: SlsId
    sub_sls: SubSls = "00"
    building_no: Annotated[int, Field(ge=1, le=9999)]  # nomor urut bangunan (WS sketch map)
    family_no: Annotated[int, Field(ge=1, le=999)]  # nomor urut keluarga (VK1)
    kk_number: KkNumber | None = None  # a married person without a KK is a family too
    kk_status: KkStatus = KkStatus.AS_PRELISTED
    parent_kk_number: KkNumber | None = None  # a split-off family: the prelisted KK it split from
    address: Annotated[str, StringConstraints(max_length=300)] = ""
    gps: Gps | None = None

    @model_validator(mode="after")
    def _parent_only_when_split(self) -> Location:
        check_parent_kk(self.kk_status, self.parent_kk_number)
        return self

    @property
    def family_id(self) -> str:
        return family_id(self.sls_id, self.building_no, self.family_no)


def family_id(sls_id: str, building_no: int, family_no: int) -> str:
    """The family's key in the system: SLS + building serial + family serial."""
    return f"{sls_id}-{building_no:04d}-{family_no:03d}"


class InterviewResult(StrEnum):
    """Result of the family's interview (hasil pendataan keluarga, Block II): complete = selesai dicacah (1);
    partly_complete = sebagian dicacah (2); no_competent_respondent = tidak ada ART/responden yang dapat memberi
    jawaban sampai akhir masa pencacahan (3); refused = menolak (4); moved = keluarga pindah (5); not_found = tidak
    ditemukan (6). Codes 3-6 are non-responses: the form carries no housing or members, and the family is still
    accounted for when its SLS is completed."""

    COMPLETE = "complete"  # (1)
    PARTLY_COMPLETE = "partly_complete"  # (2)
    NO_COMPETENT_RESPONDENT = "no_competent_respondent"  # (3)
    REFUSED = "refused"  # (4)
    MOVED = "moved"  # (5)
    NOT_FOUND = "not_found"  # (6)

    @property
    def responded(self) -> bool:
        """The family answered (fully or in part): the form carries housing and members."""
        return self in (InterviewResult.COMPLETE, InterviewResult.PARTLY_COMPLETE)


class SupervisorCheckOutcome(StrEnum):
    """The supervisor's (PML) check of the form: approved = form consistent, accepted; corrected = errors corrected
    with the officer before submission; revisit_needed = returned for a revisit (submit the revisit as a new
    version)."""

    APPROVED = "approved"
    CORRECTED = "corrected"
    REVISIT_NEEDED = "revisit_needed"


class SupervisorCheck(Contract):
    """Block II: the supervisor's (PML, pengawas) check of this form, a recorded step."""

    supervisor_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]  # the PML's officer code
    checked_on: date
    outcome: SupervisorCheckOutcome


NOTES_MAX = 2000


def check_result_shape(result: InterviewResult, has_housing: bool, residents: int) -> None:
    """A responded family's form carries its housing and at least one member living with it; a
    non-response's carries neither."""
    if result.responded:
        if not has_housing:
            raise ValueError(f"housing is required when the result is {result.value}")
        if residents == 0:
            raise ValueError(f"at least one member living with the family is required when the result is {result.value}")
    elif has_housing or residents:
        raise ValueError(f"a {result.value} form carries no housing and no members living with the family")


class FamilyInterview(Contract):
    """Form REGSOSEK22-K: one family's interview as submitted by the officer's device."""

    submission_id: SubmissionId
    version: Annotated[int, Field(ge=1, le=1000)] = 1  # a correction of the same family gets a higher version
    officer_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    interviewed_at: datetime
    result: InterviewResult = InterviewResult.COMPLETE
    supervisor_check: SupervisorCheck | None = None
    location: Location
    housing: Housing | None = None  # required unless the result is a non-response
    members: Annotated[list[Member], Field(max_length=40)]  # prelisted members (with presence) and new ones
    economy: FamilyEconomy = Field(default_factory=FamilyEconomy)
    notes: Annotated[str, StringConstraints(max_length=NOTES_MAX)] = ""  # catatan; stays with intake

    @model_validator(mode="after")
    def _result_shape(self) -> FamilyInterview:
        check_result_shape(self.result, self.housing is not None, len(self.residents))
        return self

    @property
    def family_id(self) -> str:
        return self.location.family_id

    @property
    def residents(self) -> list[Member]:
        """Members living with the family now (not died, moved or not found)."""
        return [m for m in self.members if m.presence.resident]

    @property
    def head(self) -> Member | None:
        return next((m for m in self.residents if m.relationship is Relationship.HEAD), None)
