"""A deterministic synthetic sample of East Kalimantan (province 64): SLS rosters (VK1)
as confirmed with the RT head, family interviews (REGSOSEK22-K), and the verification
outcome each interview is expected to get.

Everything is drawn from `random.Random` seeded per SLS, so a given (seed, SLS index)
always yields the same SLS: rerunning with the same seed produces identical submissions
(same submission ids, same content), and a larger sample extends a smaller one.

Regency and village codes are real BPS codes of East Kalimantan (regsosek.areas); the SLS
digits, names, NIK and KK numbers are synthetic. Housing, assets, education and
work are drawn from one latent wealth per family so the PMT welfare groups and deciles
spread over their whole range.

    python -m regsosek_tools.sample --seed 7 --families 500        # summary
    python -m regsosek_tools.sample --seed 7 --families 5 --json    # the documents
"""

from __future__ import annotations

import argparse
import json
import math
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import cache

from regsosek import areas
from regsosek.contracts import FamilyInterview, SlsRoster
from regsosek.contracts.interview import DIFFICULTY_ASKED_FROM, DIFFICULTY_MIN_AGE, Industry

WITA = timezone(timedelta(hours=8), "WITA")  # East Kalimantan local time
COLLECTION_START = date(2022, 10, 15)
FIELD_END = date(2022, 11, 14)

# ---------------------------------------------------------------- geography

@dataclass(frozen=True)
class Regency:
    code: str
    name: str
    lat: float
    lon: float
    population: int  # approximate, only to weight how many SLS fall in each
    wealth: float  # shift of the latent wealth (prices, remoteness, urban labour market)
    riverine: float  # share of families living along rivers (boats, surface water)

    @property
    def urban(self) -> bool:
        return int(self.code[2:4]) >= 71  # BPS: 71-99 = kota


REGENCIES: tuple[Regency, ...] = (
    Regency("6401", "Paser", -1.91, 116.19, 290_000, -0.15, 0.25),
    Regency("6402", "Kutai Barat", -0.23, 115.70, 170_000, -0.35, 0.45),
    Regency("6403", "Kutai Kartanegara", -0.42, 116.99, 730_000, -0.05, 0.35),
    Regency("6404", "Kutai Timur", 0.50, 117.35, 430_000, 0.0, 0.25),
    Regency("6405", "Berau", 2.15, 117.35, 250_000, -0.05, 0.35),
    Regency("6409", "Penajam Paser Utara", -1.26, 116.58, 180_000, -0.2, 0.2),
    Regency("6411", "Mahakam Ulu", 0.62, 114.93, 33_000, -0.8, 0.8),
    Regency("6471", "Balikpapan", -1.24, 116.87, 690_000, 0.55, 0.05),
    Regency("6472", "Samarinda", -0.50, 117.14, 830_000, 0.45, 0.15),
    Regency("6474", "Bontang", 0.13, 117.48, 180_000, 0.6, 0.15),
)
REGENCY_BY_CODE = {r.code: r for r in REGENCIES}
# Civil-registry area prefixes of people registered outside East Kalimantan (migrants):
# their NIK area differs from the SLS regency, which intake reports as a warning.
MIGRANT_NIK_AREAS = ("3578", "3374", "3173", "7371", "7313", "6371", "6303", "5271", "3515")

# Rough bounds of the province, for GPS.
LAT_RANGE = (-2.45, 2.55)
LON_RANGE = (114.0, 118.95)

# ---------------------------------------------------------------- names

MALE = ("Ahmad", "Muhammad", "Budi", "Agus", "Slamet", "Rudi", "Andi", "Hendra", "Yusuf", "Rahmat", "Syamsul",
        "Abdul", "Joko", "Bambang", "Dedi", "Eko", "Fajar", "Hasan", "Irfan", "Iwan", "Mulyadi", "Rizky", "Sudirman",
        "Taufik", "Wahyu", "Yohanes", "Petrus", "Stefanus", "Arif", "Aswin", "Firman", "Gusti", "Hamzah", "Ilham",
        "Jumadi", "Khairul", "Lukman", "Mahmud", "Norman", "Ramli", "Saiful", "Udin", "Zainal", "Herman", "Kadir",
        "Baharuddin", "Ismail", "Sugianto", "Yakobus", "Markus")
FEMALE = ("Siti", "Sri", "Dewi", "Rina", "Yuni", "Aminah", "Fatimah", "Hasanah", "Ani", "Lestari", "Wati",
          "Rahmawati", "Indah", "Fitri", "Maria", "Theresia", "Agnes", "Sari", "Nurul", "Rusmini", "Salmah",
          "Hartini", "Endang", "Kartini", "Mariam", "Norhayati", "Rosmini", "Suryani", "Yanti", "Zubaidah",
          "Aisyah", "Putri", "Halimah", "Kristina", "Margaretha", "Nurhayati", "Ratna", "Susanti")
MALE_LAST = ("Saputra", "Hidayat", "Rahman", "Wijaya", "Setiawan", "Pratama", "Santoso", "Gunawan", "Kurniawan",
             "Hakim", "Syahputra", "Ramadhan", "Nugroho", "Effendi", "Hasibuan", "Manurung", "Daeng Mapata",
             "Arsyad", "Noor", "Ladjang")
FEMALE_LAST = ("Wulandari", "Rahayu", "Handayani", "Anggraini", "Puspita", "Safitri", "Ningsih", "Permatasari",
               "Kusuma", "Agustina", "Noor", "Fitriani", "Marlina", "Yuliani")
STREETS = ("Jl. Pahlawan", "Jl. Merdeka", "Jl. Jend. Sudirman", "Jl. A. Yani", "Jl. Gatot Subroto",
           "Jl. Mulawarman", "Jl. Diponegoro", "Jl. Pattimura", "Jl. Kesuma Bangsa", "Jl. Pramuka", "Jl. Poros",
           "Gg. Mawar", "Gg. Melati", "Jl. Sungai Kapih", "Jl. Padat Karya", "Jl. Pangeran Antasari",
           "Jl. Cendana", "Jl. Juanda", "Jl. Imam Bonjol", "Jl. Ruhui Rahayu")


def _name(rng: random.Random, sex: str) -> str:
    first = rng.choice(MALE if sex == "male" else FEMALE)
    if rng.random() < 0.3:
        return first
    return f"{first} {rng.choice(MALE_LAST if sex == 'male' else FEMALE_LAST)}"


# ---------------------------------------------------------------- drawing

def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _chance(rng: random.Random, base: float, slope: float, w: float) -> bool:
    return rng.random() < _logistic(base + slope * w)


def _pick(rng: random.Random, options: dict[str, float]) -> str:
    return rng.choices(list(options), weights=list(options.values()))[0]


def _dob(rng: random.Random, age: int, day: date) -> date:
    """A birth date giving exactly `age` completed years on `day`."""
    anchor = date(day.year - age, day.month, day.day)
    return anchor - timedelta(days=rng.randint(1, 364))


def _age_on(dob: date, day: date) -> int:
    years = day.year - dob.year
    if (day.month, day.day) < (dob.month, dob.day):
        years -= 1
    return years


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


# ---------------------------------------------------------------- officers

def officer_for(sls_id: str) -> str:
    """The field officer (PCL) of an SLS: one officer per village in this sample."""
    return f"PCL-{sls_id[:10]}"


def officer_areas(officer_id: str) -> list[str]:
    """The SLS id prefixes an officer's token must cover (the officer's village)."""
    return [officer_id.removeprefix("PCL-")]


# ---------------------------------------------------------------- the sample

@dataclass
class Sample:
    seed: int
    rosters: list[SlsRoster]
    interviews: list[FamilyInterview]
    # family id -> expected verification outcome ("verified", "verified_added") or flag reason
    expected: dict[str, str]
    # family id -> the family whose interview must reach a final state first. A duplicate
    # NIK is flagged on the family that claims it second, so the copy goes in a second wave.
    depends_on: dict[str, str] = field(default_factory=dict)
    # family id -> the field outcome its form records (FIELD_SITUATIONS), for a small share of families
    situations: dict[str, str] = field(default_factory=dict)

    @property
    def officers(self) -> dict[str, list[str]]:
        ids = sorted({officer_for(r.sls_id) for r in self.rosters})
        return {o: officer_areas(o) for o in ids}

    def officer_for(self, sls_id: str) -> str:
        return officer_for(sls_id)

    def waves(self) -> tuple[list[FamilyInterview], list[FamilyInterview]]:
        """Interviews to submit first, and those to submit once their `depends_on` is final."""
        first = [iv for iv in self.interviews if iv.family_id not in self.depends_on]
        second = [iv for iv in self.interviews if iv.family_id in self.depends_on]
        return first, second

    def form_codes(self) -> dict[str, dict[str, int]]:
        """How often each code of the form's full lists (docs/FORM.md) appears in the sample: highest
        diploma, industry of a job or an own business, functional-difficulty domain answered."""
        members = [m for iv in self.interviews for m in iv.members]
        industries = [m.industry for m in members if m.industry] + [
            m.business.industry for m in members if m.business and m.business.industry]
        domains = [d for m in members if m.difficulties for d in m.difficulties.answered()]
        return {"diploma": dict(sorted(Counter(m.highest_diploma.value for m in members).items())),
                "industry": dict(sorted(Counter(i.value for i in industries).items())),
                "difficulty_domain": dict(sorted(Counter(domains).items()))}

    def summary(self) -> dict:
        return {
            "seed": self.seed,
            "sls": len(self.rosters),
            "roster_families": sum(len(r.families) for r in self.rosters),
            "roster_status": dict(Counter(f.status.value for r in self.rosters for f in r.families)),
            "interviews": len(self.interviews),
            "members": sum(len(iv.members) for iv in self.interviews),
            "expected": dict(Counter(self.expected.values())),
            "field_situations": dict(sorted(Counter(self.situations.values()).items())),
            "form_codes": self.form_codes(),
            "regencies": dict(sorted(Counter(r.sls_id[:4] for r in self.rosters).items())),
            "officers": len(self.officers),
        }


@dataclass
class _Draft:
    """One family before it becomes a FamilyInterview: plain dicts, still editable."""

    building_no: int
    family_no: int
    kk_number: str | None
    head_name: str
    members: list[dict]
    doc: dict  # the interview document without members


class _Registry:
    """Identifiers already used in the sample (NIK and KK numbers are unique, SLS ids too)."""

    def __init__(self) -> None:
        self.niks: set[str] = set()
        self.kks: set[str] = set()
        self.sls: set[str] = set()


def generate(seed: int, families: int, *, field_outcomes: bool = False) -> Sample:
    """`families` interviews over as many SLS as it takes (20-40 families each). With
    `field_outcomes`, a small share of families carry what the form records beyond a complete
    interview (`_field_outcomes`: refusals, split-off families, members who died) and every
    responded form its supervisor's check; without, the sample is what it was before them."""
    if families < 1:
        raise ValueError("families must be at least 1")
    reg = _Registry()
    rosters: list[SlsRoster] = []
    interviews: list[FamilyInterview] = []
    expected: dict[str, str] = {}
    depends_on: dict[str, str] = {}
    situations: dict[str, str] = {}
    previous: list[tuple[str, _Draft]] = []  # verified families of the previous SLS (donors of duplicate NIKs)
    k = 0
    while len(interviews) < families:
        rng = random.Random(f"regsosek-sample:{seed}:{k}")
        roster, drafts, sls_expected, sls_depends = _sls(rng, k, reg, previous)
        # further streams, so that the SLS drawn above stay what they were before the form's full code
        # lists and field outcomes existed
        _form_codes(random.Random(f"regsosek-sample-form:{seed}:{k}"), drafts)
        sls_situations = _field_outcomes(random.Random(f"regsosek-sample-field:{seed}:{k}"), k, reg, drafts,
                                         sls_expected) if field_outcomes else {}
        rosters.append(roster)
        room = families - len(interviews)
        for fid, d in drafts[:room]:
            doc = dict(d.doc, members=d.members)
            interviews.append(FamilyInterview.model_validate(doc))
            expected[fid] = sls_expected[fid]
            if fid in sls_depends:
                depends_on[fid] = sls_depends[fid]
            if fid in sls_situations:
                situations[fid] = sls_situations[fid]
        previous = [(fid, d) for fid, d in drafts if sls_expected[fid] == "verified" and fid not in sls_situations]
        k += 1
    return Sample(seed=seed, rosters=rosters, interviews=interviews, expected=expected, depends_on=depends_on,
                  situations=situations)


# ---------------------------------------------------------------- the form's full code lists (docs/FORM.md)

# The main stream draws a coarse code; its own stream refines it into the form's full list. Shares are
# illustrative (East Kalimantan's agriculture is mostly oil palm and other plantations, then food crops
# and fisheries), not statistics.
DIPLOMA_DETAIL = {"sma": {"sma": 0.62, "smk": 0.38}, "d1_d3": {"d1_d2": 0.3, "d3": 0.7},
                  "s2_s3": {"s2": 0.9, "s3": 0.1}}
INDUSTRY_DETAIL = {
    "agriculture": {"plantation": 0.4, "food_crops": 0.22, "fisheries": 0.16, "horticulture": 0.08,
                    "livestock": 0.06, "forestry_other_agriculture": 0.08},
    "other_services": {"other_services": 0.3, "business_support": 0.12, "households_as_employers": 0.1,
                       "finance_insurance": 0.1, "information_communication": 0.08, "professional_services": 0.06,
                       "water_waste": 0.06, "electricity_gas": 0.05, "arts_recreation": 0.05, "real_estate": 0.05,
                       "extraterritorial": 0.03},
}
# Domains more likely among the elderly (eyes, ears, legs), and among younger members.
DOMAIN_WEIGHTS_ELDERLY = {"walking": 0.3, "seeing": 0.25, "hearing": 0.2, "remembering": 0.1, "self_care": 0.06,
                          "using_hands": 0.05, "communicating": 0.02, "behaviour": 0.02}
DOMAIN_WEIGHTS_YOUNGER = {"walking": 0.2, "seeing": 0.15, "communicating": 0.14, "remembering": 0.12,
                          "behaviour": 0.12, "hearing": 0.1, "using_hands": 0.09, "self_care": 0.08}
LESSER = {"some": (), "a_lot": ("some",), "cannot": ("some", "a_lot")}


def _form_codes(rng: random.Random, drafts: list[tuple[str, _Draft]]) -> None:
    """The form's full code lists on one SLS's families: a diploma and an industry refined from the
    coarse code drawn (job and own business on the same list), the functional-difficulty domains of a
    member with a difficulty (only those asked at the member's age; none below age 2), and the own
    business's details. Verification outcomes do not change; the PMT reads the refined codes as the
    coarse ones (classify.model)."""
    for _, d in drafts:
        day = datetime.fromisoformat(d.doc["interviewed_at"]).date()
        for m in d.members:
            detail = DIPLOMA_DETAIL.get(m["highest_diploma"])
            if detail:
                m["highest_diploma"] = _pick(rng, detail)
            if m["industry"] in INDUSTRY_DETAIL:
                m["industry"] = _pick(rng, INDUSTRY_DETAIL[m["industry"]])
            _difficulties(rng, m, _age_on(date.fromisoformat(m["date_of_birth"]), day))
            if m["has_business"]:
                workers = 0 if m["job_status"] == "self_employed" else rng.randint(1, 6)
                m["business"] = {"industry": m["industry"], "workers": workers,
                                 "paid_workers": workers if m["job_status"] == "employer_permanent" else 0,
                                 "licensed": rng.random() < 0.35,
                                 "turnover": _pick(rng, {"lt_5m": 0.6, "5m_15m": 0.25, "15m_25m": 0.08,
                                                         "25m_50m": 0.05, "50m_plus": 0.02}),
                                 "uses_internet": rng.random() < 0.3}


def _difficulties(rng: random.Random, m: dict, age: int) -> None:
    """Per-domain difficulties whose worst is the member's drawn difficulty, in domains asked at `age`."""
    if age < DIFFICULTY_ASKED_FROM:
        m["difficulty"] = "none"  # the question is not asked of a child under 2
        return
    if m["difficulty"] == "none":
        return
    weights = {k: v for k, v in (DOMAIN_WEIGHTS_ELDERLY if age >= 60 else DOMAIN_WEIGHTS_YOUNGER).items()
               if age >= DIFFICULTY_MIN_AGE[k]}
    main = _pick(rng, weights)
    answers = {main: m["difficulty"]}
    others = [k for k in weights if k != main]
    for k in rng.sample(others, rng.randint(0, 2)):
        if LESSER[m["difficulty"]]:
            answers[k] = rng.choice(LESSER[m["difficulty"]])
    m["difficulties"] = answers


# ---------------------------------------------------------------- field outcomes (docs/DOMAIN.md)

# What the form records beyond a complete interview, and the share of SLS showing each (the second
# SLS, k = 1, shows each one it can: a split-off needs a family the RT head did not list there).
FIELD_SITUATIONS = {"refused": 0.15, "split_off": 0.25, "member_died": 0.2}
SUPERVISOR_CORRECTED = 0.1  # share of forms the PML corrected with the officer before submission


def _field_outcomes(rng: random.Random, k: int, reg: _Registry, drafts: list[tuple[str, _Draft]],
                    expected: dict[str, str]) -> dict[str, str]:
    """Field outcomes for a small share of one SLS's families, with what verify concludes on each:
    a refusal (accounted for, `refused`), a family split off a prelisted KK (matched to it:
    `verified`), a member who died (explains a household smaller than the roster's: `verified`).
    Every responded form gets its supervisor's (PML) check. Returns family id -> situation."""
    situations: dict[str, str] = {}
    verified = [(fid, d) for fid, d in drafts if expected[fid] == "verified"]
    if verified and (k == 1 or rng.random() < FIELD_SITUATIONS["refused"]):
        fid, d = rng.choice(verified)
        d.members = []
        d.doc = {key: v for key, v in d.doc.items() if key not in ("housing", "economy")} | {"result": "refused"}
        situations[fid] = expected[fid] = "refused"
    free = [(fid, d) for fid, d in verified if fid not in situations]
    unlisted = [(fid, d) for fid, d in drafts if expected[fid] == "not_on_roster"]
    parent_kks = [kk for _, d in free if (kk := d.kk_number)]
    if unlisted and parent_kks and (k == 1 or rng.random() < FIELD_SITUATIONS["split_off"]):
        (fid, d), parent_kk = rng.choice(unlisted), rng.choice(parent_kks)
        loc = d.doc["location"]
        loc.update(kk_status="split_off", parent_kk_number=parent_kk,
                   kk_number=loc["kk_number"] or _kk(rng, reg, parent_kk[:6]))
        expected[fid] = "verified"
        situations[fid] = "split_off"
    households = [(fid, d) for fid, d in free if len(d.members) >= 2]
    if households and (k == 1 or rng.random() < FIELD_SITUATIONS["member_died"]):
        fid, d = rng.choice(households)
        rng.choice(d.members[1:])["presence"] = "died"  # the head (line 1) lives; the roster still counts the member
        situations[fid] = "member_died"
    for _, d in drafts:
        if d.members:
            day = datetime.fromisoformat(d.doc["interviewed_at"]).date()
            d.doc["supervisor_check"] = {
                "supervisor_id": f"PML-{d.doc['location']['sls_id'][:7]}",
                "checked_on": (day + timedelta(days=rng.randint(0, 3))).isoformat(),
                "outcome": "corrected" if rng.random() < SUPERVISOR_CORRECTED else "approved"}
    return situations


@cache
def _villages_of(regency: str) -> list[str]:
    return areas.reference().villages_of(regency)


def _sls_id(rng: random.Random, reg: _Registry) -> tuple[str, Regency]:
    regency = rng.choices(REGENCIES, weights=[r.population for r in REGENCIES])[0]
    villages = _villages_of(regency.code)
    while True:
        sid = f"{rng.choice(villages)}{rng.randint(1, 999):04d}"  # a real BPS village, a synthetic SLS
        if sid not in reg.sls:
            reg.sls.add(sid)
            return sid, regency


def _sls(rng: random.Random, k: int, reg: _Registry, previous: list[tuple[str, _Draft]]):
    sls_id, regency = _sls_id(rng, reg)
    center_lat = min(max(regency.lat + rng.uniform(-1, 1) * (0.04 if regency.urban else 0.25), LAT_RANGE[0]), LAT_RANGE[1])
    center_lon = min(max(regency.lon + rng.uniform(-1, 1) * (0.04 if regency.urban else 0.25), LON_RANGE[0]), LON_RANGE[1])
    sls_wealth = regency.wealth + rng.gauss(0, 0.35)
    nik_district = rng.randint(1, 20)
    street = rng.choice(STREETS)
    riverine = rng.random() < regency.riverine

    start = COLLECTION_START + timedelta(days=rng.randint(0, 24))
    confirmed_at = datetime.combine(start, time(rng.randint(7, 9), rng.randint(0, 59)), WITA)
    officer = officer_for(sls_id)
    rt_head = f"Ketua RT {_name(rng, 'male' if rng.random() < 0.85 else 'female')}"

    statuses = _roster_statuses(rng, k)

    building = 0
    family_no = 0
    entries: list[dict] = []  # roster families
    drafts: list[tuple[str, _Draft]] = []
    expected: dict[str, str] = {}
    depends: dict[str, str] = {}

    def new_family() -> _Draft:
        nonlocal building, family_no
        if building == 0 or rng.random() > 0.12:  # ~12% of families share a building with the previous one
            building += 1
        family_no += 1
        day = min(start + timedelta(days=rng.randint(0, 6)), FIELD_END)
        at = datetime.combine(day, time(rng.randint(10, 17), rng.randint(0, 59), rng.randint(0, 59)), WITA)
        return _family(rng, reg, sls_id=sls_id, regency=regency, sls_wealth=sls_wealth, riverine=riverine,
                       nik_district=nik_district, building_no=building, family_no=family_no, at=at,
                       officer=officer, street=street, gps=(center_lat, center_lon))

    forced_mismatch = k == 0
    forced_moved_interview = k == 0
    for status in statuses:
        d = new_family()
        count = len(d.members)
        fid = _fid(sls_id, d)
        interviewed = True
        outcome = {"present": "verified", "added": "verified_added"}.get(status, f"roster_says_{status}")
        if status == "present" and (forced_mismatch or rng.random() < 0.03):
            forced_mismatch = False
            count = count + rng.choice((-1, 1)) if count > 1 else count + 1  # the roster is out of date
            outcome = "member_count_differs"
        if status in ("moved", "dissolved", "unknown"):
            interviewed = (status == "moved" and forced_moved_interview) or rng.random() < 0.15
            if status == "moved":
                forced_moved_interview = forced_moved_interview and not interviewed
        entries.append({"building_no": d.building_no, "family_no": d.family_no, "kk_number": d.kk_number,
                        "head_name": d.head_name, "member_count": count, "status": status})
        if interviewed:
            drafts.append((fid, d))
            expected[fid] = outcome

    # A family the RT head did not mention (neither on the prelist nor added).
    if k == 0 or rng.random() < 0.35:
        d = new_family()
        fid = _fid(sls_id, d)
        drafts.append((fid, d))
        expected[fid] = "not_on_roster"

    if previous and (k == 1 or rng.random() < 0.3):
        _duplicate_nik(rng, previous, drafts, entries, expected, depends)

    rng.shuffle(drafts)  # officers do not visit in roster order
    roster = SlsRoster.model_validate({
        "submission_id": str(_uuid(rng)), "sls_id": sls_id, "officer_id": officer, "confirmed_by": rt_head,
        "confirmed_at": confirmed_at.isoformat(), "families": entries,
    })
    return roster, drafts, expected, depends


def _roster_statuses(rng: random.Random, k: int) -> list[str]:
    """The prelist (VK1) as confirmed with the RT head, then families added to it."""
    n_prelist = rng.randint(20, 36)
    statuses = [_pick(rng, {"present": 0.86, "moved": 0.06, "dissolved": 0.03, "unknown": 0.05}) for _ in range(n_prelist)]
    if k == 0 and "moved" not in statuses:
        statuses[-1] = "moved"
    statuses += ["added"] * rng.choices((0, 1, 2, 3), weights=(0.35, 0.35, 0.2, 0.1))[0]
    return statuses


def _duplicate_nik(rng: random.Random, previous: list[tuple[str, _Draft]], drafts: list[tuple[str, _Draft]],
                   entries: list[dict], expected: dict[str, str], depends: dict[str, str]) -> None:
    """Duplicate NIK: a member of a verified family in the previous SLS is also listed in a verified family
    here (e.g. an adult child registered with both households); that family depends on its donor."""
    candidates = [(fid, d) for fid, d in drafts if expected[fid] == "verified"]
    donors = [(fid, d, m) for fid, d in previous for m in d.members
              if m["nik"] and m["relationship"] != "head"
              and _age_on(date.fromisoformat(m["date_of_birth"]), COLLECTION_START) >= 15]
    if not (candidates and donors):
        return
    fid, d = rng.choice(candidates)
    donor_fid, _, m = rng.choice(donors)
    copy = dict(m, line_no=len(d.members) + 1, relationship="other_relative", pregnant=False)
    d.members.append(copy)
    for e in entries:
        if (e["building_no"], e["family_no"]) == (d.building_no, d.family_no):
            e["member_count"] = len(d.members)
    expected[fid] = "duplicate_nik"
    depends[fid] = donor_fid


def _fid(sls_id: str, d: _Draft) -> str:
    return f"{sls_id}-{d.building_no:04d}-{d.family_no:03d}"


# ---------------------------------------------------------------- one family

def _nik(rng: random.Random, reg: _Registry, area: str, dob: date, sex: str) -> str:
    dd = dob.day + (40 if sex == "female" else 0)
    while True:
        nik = f"{area}{dd:02d}{dob.month:02d}{dob.year % 100:02d}{rng.randint(1, 9999):04d}"
        if nik not in reg.niks:
            reg.niks.add(nik)
            return nik


def _kk(rng: random.Random, reg: _Registry, area: str) -> str:
    while True:
        issued = date(2005, 1, 1) + timedelta(days=rng.randint(0, 6500))
        kk = f"{area}{issued.day:02d}{issued.month:02d}{issued.year % 100:02d}{rng.randint(1, 9999):04d}"
        if kk not in reg.kks:
            reg.kks.add(kk)
            return kk


def _family(rng: random.Random, reg: _Registry, *, sls_id: str, regency: Regency, sls_wealth: float, riverine: bool,
            nik_district: int, building_no: int, family_no: int, at: datetime, officer: str, street: str,
            gps: tuple[float, float]) -> _Draft:
    day = at.date()
    urban = regency.urban
    w = rng.gauss(0, 0.8) + sls_wealth  # latent wealth
    people = _people(rng, w, day)
    area = f"{regency.code}{nik_district:02d}"
    members = []
    for i, p in enumerate(people, start=1):
        members.append(_member(rng, reg, p, i, w, day, urban, area))
    kk = None if rng.random() < 0.02 else _kk(rng, reg, area)
    housing = _housing(rng, w, urban, riverine)
    economy = _economy(rng, w, urban, riverine, housing, members)
    lat = min(max(gps[0] + rng.uniform(-0.003, 0.003), LAT_RANGE[0]), LAT_RANGE[1])
    lon = min(max(gps[1] + rng.uniform(-0.003, 0.003), LON_RANGE[0]), LON_RANGE[1])
    doc = {
        "submission_id": str(_uuid(rng)),
        "version": 1,
        "officer_id": officer,
        "interviewed_at": at.isoformat(),
        "location": {
            "sls_id": sls_id, "sub_sls": "00", "building_no": building_no, "family_no": family_no,
            "kk_number": kk, "address": f"{street} No. {building_no}, RT {int(sls_id[10:]):03d}",
            "gps": {"lat": round(lat, 6), "lon": round(lon, 6)},
        },
        "housing": housing,
        "economy": economy,
    }
    return _Draft(building_no, family_no, kk, members[0]["name"], members, doc)


def _people(rng: random.Random, w: float, day: date) -> list[dict]:
    """Who lives in the family: (relationship, sex, age, marital status), head first."""
    head_age = rng.choices((rng.randint(20, 29), rng.randint(30, 39), rng.randint(40, 49), rng.randint(50, 59),
                            rng.randint(60, 69), rng.randint(70, 80)), weights=(17, 25, 24, 18, 11, 5))[0]
    female_head = rng.random() < (0.3 if head_age >= 60 else 0.1)
    people: list[dict] = []
    if female_head:
        marital = _pick(rng, {"widowed": 0.6, "divorced": 0.3, "never_married": 0.1})
        people.append({"rel": "head", "sex": "female", "age": head_age, "marital": marital})
        mother_age = head_age
    else:
        married = rng.random() < (0.93 if head_age >= 25 else 0.75)
        marital = "married" if married else ("never_married" if head_age < 35 else _pick(rng, {"widowed": 0.7, "divorced": 0.3}))
        people.append({"rel": "head", "sex": "male", "age": head_age, "marital": marital})
        mother_age = None
        if married:
            spouse_age = max(17, head_age - rng.randint(-3, 8))
            people.append({"rel": "spouse", "sex": "female", "age": spouse_age, "marital": "married"})
            mother_age = spouse_age
    # Children living at home.
    if mother_age is not None and (marital != "never_married"):
        wanted = max(0, min(7, round(rng.gauss(2.2 - 0.45 * w, 1.2))))
        ages = []
        for _ in range(wanted):
            age = mother_age - rng.randint(18, 42)
            if 0 <= age <= head_age - 15 and (age <= 24 or rng.random() < 0.35):
                ages.append(age)
        for age in sorted(ages, reverse=True):
            sex = "male" if rng.random() < 0.51 else "female"
            people.append({"rel": "child", "sex": sex, "age": age, "marital": "never_married"})
    # A married child with spouse and grandchildren (three generations).
    if head_age >= 48 and rng.random() < 0.15:
        child_age = rng.randint(21, min(35, head_age - 19))
        sex = "male" if rng.random() < 0.5 else "female"
        people.append({"rel": "child", "sex": sex, "age": child_age, "marital": "married"})
        people.append({"rel": "child_in_law", "sex": "female" if sex == "male" else "male",
                       "age": max(18, child_age + rng.randint(-4, 4)), "marital": "married"})
        for _ in range(rng.choice((0, 1, 1, 2))):
            g_age = rng.randint(0, max(0, child_age - 19))
            people.append({"rel": "grandchild", "sex": "male" if rng.random() < 0.5 else "female",
                           "age": g_age, "marital": "never_married"})
    # An elderly parent.
    if head_age <= 62 and rng.random() < 0.08 - 0.02 * w:
        p_age = head_age + rng.randint(20, 35)
        if p_age <= 95:
            people.append({"rel": "parent", "sex": "female" if rng.random() < 0.7 else "male", "age": p_age,
                           "marital": "widowed"})
    # Another relative (a nephew or niece at school in town, a sibling).
    if rng.random() < 0.04:
        people.append({"rel": "other_relative", "sex": "male" if rng.random() < 0.5 else "female",
                       "age": rng.randint(8, 30), "marital": "never_married"})
    return people


def _diploma_for_adult(rng: random.Random, w: float, age: int) -> str:
    s = w + rng.gauss(0, 0.8) + (0.3 if age < 40 else (-0.4 if age >= 60 else 0.0))
    for limit, diploma in ((-1.5, "none"), (-0.5, "sd"), (0.1, "smp"), (1.1, "sma"), (1.5, "d1_d3"), (2.4, "d4_s1")):
        if s < limit:
            return diploma
    return "s2_s3"


def _school(rng: random.Random, w: float, age: int) -> tuple[str, str]:
    """(school participation, highest diploma)."""
    if age < 5:
        return "never", "none"
    if age <= 6:
        return ("attending" if rng.random() < 0.5 else "never"), "none"
    if age <= 12:
        return ("attending" if rng.random() < 0.97 else "not_anymore"), "none"
    if age <= 15:
        return ("attending", "sd") if _chance(rng, 2.5, 1.0, w) else ("not_anymore", "sd")
    if age <= 18:
        return ("attending", "smp") if _chance(rng, 1.2, 1.0, w) else ("not_anymore", rng.choice(("sd", "smp")))
    if age <= 24 and _chance(rng, -1.3, 1.2, w):
        return "attending", "sma"
    diploma = _diploma_for_adult(rng, w, age)
    return ("never" if diploma == "none" and rng.random() < 0.6 else "not_anymore"), diploma


INDUSTRY_RURAL = {"agriculture": 0.45, "mining": 0.07, "trade": 0.14, "construction": 0.08, "manufacturing": 0.05,
                  "transport": 0.05, "public_administration": 0.04, "education": 0.04, "health": 0.02,
                  "accommodation_food": 0.03, "other_services": 0.03}
INDUSTRY_URBAN = {"agriculture": 0.04, "mining": 0.07, "trade": 0.26, "construction": 0.1, "manufacturing": 0.06,
                  "transport": 0.08, "public_administration": 0.07, "education": 0.07, "health": 0.04,
                  "accommodation_food": 0.1, "other_services": 0.11}


def _member(rng: random.Random, reg: _Registry, p: dict, line_no: int, w: float, day: date, urban: bool,
            area: str) -> dict:
    age, sex, rel = p["age"], p["sex"], p["rel"]
    dob = _dob(rng, age, day)
    school, diploma = _school(rng, w, age)
    works = _works(rng, age, sex, rel, school)
    hours, industry, job_status, business = _job(rng, age, rel, w, urban) if works else (0, None, None, False)
    pregnant = sex == "female" and p["marital"] == "married" and 17 <= age <= 42 and rng.random() < 0.06
    r = rng.random()
    if age >= 60:
        difficulty = "some" if r < 0.22 else "a_lot" if r < 0.28 else "cannot" if r < 0.30 else "none"
    else:
        difficulty = "some" if r < 0.02 else "a_lot" if r < 0.03 else "cannot" if r < 0.035 else "none"
    chronic = rng.random() < (0.35 if age >= 60 else 0.18 if age >= 45 else 0.03)
    if w < -0.5:
        insurance = _pick(rng, {"pbi_jkn": 0.7, "none": 0.25, "jkn_paid": 0.05})
    elif w < 0.7:
        insurance = _pick(rng, {"pbi_jkn": 0.25, "jkn_paid": 0.5, "none": 0.25})
    else:
        insurance = _pick(rng, {"jkn_paid": 0.85, "other": 0.1, "none": 0.05})
    # NIK: most members have one; infants and some people in remote places do not.
    has_nik = rng.random() < (0.5 if age < 1 else 0.96)
    nik_area = area if rng.random() > 0.08 else f"{rng.choice(MIGRANT_NIK_AREAS)}{rng.randint(1, 20):02d}"
    return {
        "line_no": line_no,
        "name": _name(rng, sex),
        "nik": _nik(rng, reg, nik_area, dob, sex) if has_nik else None,
        "sex": sex,
        "date_of_birth": dob.isoformat(),
        "relationship": rel,
        "marital_status": p["marital"],
        "pregnant": pregnant,
        "school": school,
        "highest_diploma": diploma,
        "worked_last_week": works,
        "hours_worked": hours,
        "industry": industry,
        "job_status": job_status,
        "has_business": business,
        "difficulty": difficulty,
        "chronic_disease": chronic,
        "health_insurance": insurance,
    }


def _works(rng: random.Random, age: int, sex: str, rel: str, school: str) -> bool:
    """Worked last week."""
    if age < 10:
        return False
    if age < 15:
        return rng.random() < 0.03
    if school == "attending":
        return rng.random() < 0.08
    if rel == "head":
        return rng.random() < ((0.9 if sex == "male" else 0.65) if age < 60 else (0.6 if age < 70 else 0.3))
    if rel == "spouse":
        return rng.random() < (0.85 if sex == "male" else 0.4)
    if age >= 65:
        return rng.random() < 0.2
    return rng.random() < 0.55


def _job(rng: random.Random, age: int, rel: str, w: float, urban: bool) -> tuple[int, str, str, bool]:
    """(hours worked, industry, job status, has a business) of someone who worked last week."""
    industry = _pick(rng, INDUSTRY_URBAN if urban else INDUSTRY_RURAL)
    if age < 15:
        job_status = "family_worker"
    elif _chance(rng, -0.2 + (0.5 if urban else 0.0), 1.0, w) and industry != "agriculture":
        job_status = "employee"
    elif w < -0.7 and rng.random() < 0.45:
        job_status = "casual"
    else:
        job_status = _pick(rng, {"self_employed": 0.6, "employer_temporary": 0.2,
                                 "employer_permanent": 0.05 + max(0.0, 0.1 * w),
                                 "family_worker": 0.15 if rel != "head" else 0.0})
    hours = rng.randint(15, 40) if job_status in ("casual", "family_worker") else rng.randint(30, 60)
    business = job_status in ("self_employed", "employer_temporary", "employer_permanent")
    return hours, industry, job_status, business


def _housing(rng: random.Random, w: float, urban: bool, riverine: bool) -> dict:
    # The draws happen in a fixed order (the sample is deterministic per seed): keep it.
    s = w + rng.gauss(0, 0.7)
    if urban:
        tenure = _pick(rng, {"owned": 0.68, "rented": 0.2, "rent_free": 0.1, "official": 0.02})
    else:
        tenure = _pick(rng, {"owned": 0.86, "rent_free": 0.1, "rented": 0.02, "official": 0.01, "other": 0.01})
    area = round(min(600.0, max(9.0, math.exp(rng.gauss(3.95 + 0.3 * w, 0.35)))))
    floor, wall, roof = _building(rng, s)
    water = _drinking_water(rng, s, urban, riverine)
    lighting, power = _electricity(rng, s, urban)
    fuel = _cooking_fuel(rng, s)
    toilet, faeces = _sanitation(rng, s)
    return {"tenure": tenure, "floor_area_m2": area, "floor": floor, "wall": wall, "roof": roof,
            "drinking_water": water, "lighting": lighting, "installed_power": power, "cooking_fuel": fuel,
            "toilet": toilet, "faeces_disposal": faeces}


def _building(rng: random.Random, s: float) -> tuple[str, str, str]:
    """(floor, wall, roof) for housing quality `s`."""
    if s > 1.2:
        floor = _pick(rng, {"marble_granite": 0.3, "ceramic": 0.7})
    elif s > 0:
        floor = _pick(rng, {"ceramic": 0.6, "tile_terrazzo": 0.1, "parquet_vinyl": 0.05, "wood_plank": 0.25})
    elif s > -1:
        floor = _pick(rng, {"wood_plank": 0.5, "cement_brick": 0.35, "ceramic": 0.15})
    else:
        floor = _pick(rng, {"wood_plank": 0.5, "earth": 0.25, "bamboo": 0.15, "cement_brick": 0.1})
    if s > 0.3:
        wall = "masonry"
    elif s > -0.8:
        wall = _pick(rng, {"masonry": 0.4, "wood_board": 0.6})
    else:
        wall = _pick(rng, {"wood_board": 0.6, "woven_bamboo": 0.15, "bamboo": 0.1, "log": 0.05,
                           "plaster_woven_bamboo": 0.1})
    if s > 1:
        roof = _pick(rng, {"concrete": 0.2, "clay_tile": 0.3, "zinc": 0.5})
    elif s > -1:
        roof = _pick(rng, {"zinc": 0.8, "asbestos": 0.15, "clay_tile": 0.05})
    else:
        roof = _pick(rng, {"zinc": 0.5, "wood_shingle": 0.2, "thatch": 0.2, "bamboo": 0.1})
    return floor, wall, roof


def _drinking_water(rng: random.Random, s: float, urban: bool, riverine: bool) -> str:
    if urban:
        return _pick(rng, {"bottled": 0.3, "refill": 0.4, "piped": 0.3} if s > 0.8 else
                     {"refill": 0.5, "piped": 0.3, "drilled_well": 0.2})
    if s > 0:
        return _pick(rng, {"refill": 0.3, "piped": 0.3, "drilled_well": 0.2, "protected_well": 0.2})
    if s > -1:
        return _pick(rng, {"drilled_well": 0.3, "protected_well": 0.3, "rain": 0.2, "unprotected_well": 0.1,
                           ("surface" if riverine else "protected_spring"): 0.1})
    return _pick(rng, {("surface" if riverine else "unprotected_spring"): 0.45, "rain": 0.25,
                       "unprotected_well": 0.2, "protected_well": 0.1})


def _electricity(rng: random.Random, s: float, urban: bool) -> tuple[str, str | None]:
    """(lighting, installed power of a PLN connection or None)."""
    if urban or s > -1:
        lighting = _pick(rng, {"pln_metered": 0.95, "pln_unmetered": 0.05})
    else:
        lighting = _pick(rng, {"pln_metered": 0.5, "pln_unmetered": 0.15, "non_pln": 0.25, "none": 0.1})
    if not lighting.startswith("pln"):
        return lighting, None
    if s < -0.7:
        return lighting, _pick(rng, {"450": 0.7, "900": 0.3})
    if s < 0.3:
        return lighting, _pick(rng, {"450": 0.1, "900": 0.6, "1300": 0.3})
    if s < 1.2:
        return lighting, _pick(rng, {"900": 0.2, "1300": 0.5, "2200": 0.3})
    return lighting, _pick(rng, {"2200": 0.4, ">2200": 0.6})


def _cooking_fuel(rng: random.Random, s: float) -> str:
    if s > 1.2:
        return _pick(rng, {"lpg_large": 0.5, "electricity": 0.15, "lpg_3kg": 0.35})
    if s > -0.8:
        return _pick(rng, {"lpg_3kg": 0.85, "lpg_large": 0.1, "kerosene": 0.05})
    return _pick(rng, {"lpg_3kg": 0.5, "wood": 0.4, "kerosene": 0.05, "charcoal": 0.05})


def _sanitation(rng: random.Random, s: float) -> tuple[str, str]:
    """(toilet, faeces disposal)."""
    if s > -0.5:
        toilet = _pick(rng, {"own": 0.95, "shared": 0.05})
    else:
        toilet = _pick(rng, {"own": 0.6, "shared": 0.15, "public": 0.1, "none": 0.15})
    if toilet == "none":
        return toilet, "open"
    if s > 0.5:
        return toilet, _pick(rng, {"septic_tank": 0.9, "ipal": 0.05, "pit": 0.05})
    if s > -0.8:
        return toilet, _pick(rng, {"septic_tank": 0.6, "pit": 0.3, "open": 0.1})
    return toilet, _pick(rng, {"pit": 0.4, "open": 0.45, "septic_tank": 0.15})


ASSET_CHANCES = {  # asset: (base, slope on latent wealth)
    "smartphone": (1.6, 1.5), "motorbike": (1.6, 1.2), "refrigerator": (0.2, 1.5), "flat_tv": (-0.6, 1.5),
    "gas_cylinder_5_5kg": (-1.6, 1.5), "air_conditioner": (-2.6, 1.8), "water_heater": (-3.2, 1.8),
    "computer": (-2.2, 1.6), "car": (-2.7, 1.7), "gold_10g": (-1.3, 1.2), "bicycle": (-0.9, 0.3),
    "landline": (-4.5, 1.0), "other_house": (-3.2, 1.5),
}


def _economy(rng: random.Random, w: float, urban: bool, riverine: bool, housing: dict, members: list[dict]) -> dict:
    # The draws happen in a fixed order (the sample is deterministic per seed): keep it.
    assets = _assets(rng, w, urban, riverine)
    livestock = _livestock(rng, w) if not urban else {}
    programmes = _programmes(rng, w, urban, housing, members)
    return {
        "programmes_received": programmes,
        "assets": assets,
        "livestock": livestock,
        "internet_access": _chance(rng, 0.2 + (0.6 if urban else 0.0), 1.3, w),
        "bank_account": _chance(rng, -0.3 + (0.4 if urban else 0.0), 1.4, w),
    }


def _assets(rng: random.Random, w: float, urban: bool, riverine: bool) -> list[str]:
    assets = [a for a, (b, s) in ASSET_CHANCES.items() if _chance(rng, b, s, w)]
    if not urban:
        if riverine and rng.random() < 0.35:
            assets.append("boat")
        if riverine and _chance(rng, -2.0, 0.6, w):
            assets.append("motorboat")
        if _chance(rng, -1.2, 0.6, w):
            assets.append("other_land")
    return assets


def _livestock(rng: random.Random, w: float) -> dict[str, int]:
    livestock = {}
    if rng.random() < 0.08:
        livestock["goat_sheep"] = rng.randint(2, 12)
    if _chance(rng, -3.0, 0.6, w):
        livestock["cattle"] = rng.randint(1, 6)
    if rng.random() < 0.06:
        livestock["pig"] = rng.randint(1, 5)
    return livestock


def _programmes(rng: random.Random, w: float, urban: bool, housing: dict, members: list[dict]) -> list[str]:
    """Programmes the family received, more likely the poorer it is (latent wealth `w`)."""
    programmes = []
    poor = _logistic(-1.0 - 1.6 * w)  # how likely targeted programmes reached this family
    if rng.random() < poor:
        programmes.append("sembako")
    if rng.random() < poor * 0.8 and any(m["relationship"] in ("child", "grandchild") for m in members):
        programmes.append("pkh")
    if not urban and rng.random() < poor * 0.5:
        programmes.append("blt_desa")
    if housing["installed_power"] in ("450", "900") and rng.random() < 0.7:
        programmes.append("electricity_subsidy")
    if housing["cooking_fuel"] == "lpg_3kg" and rng.random() < 0.5:
        programmes.append("lpg_subsidy")
    if rng.random() < poor * 0.15:
        programmes.append("regional_aid")
    if any(m["industry"] and Industry(m["industry"]).agricultural for m in members) and rng.random() < 0.3:
        programmes.append("fertiliser_subsidy")
    return programmes


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--families", type=int, default=100)
    p.add_argument("--field-outcomes", action="store_true",
                   help="refusals, split-off families, members who died and the supervisor's check, as `make run` sends")
    p.add_argument("--json", action="store_true", help="print rosters, interviews and expectations as JSON")
    a = p.parse_args(argv)
    s = generate(a.seed, a.families, field_outcomes=a.field_outcomes)
    if a.json:
        print(json.dumps({
            "rosters": [r.model_dump(mode="json") for r in s.rosters],
            "interviews": [iv.model_dump(mode="json") for iv in s.interviews],
            "expected": s.expected, "depends_on": s.depends_on, "situations": s.situations,
        }, indent=1))
    else:
        print(json.dumps(s.summary(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
