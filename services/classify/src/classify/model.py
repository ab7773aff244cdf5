"""The PMT model, poverty lines and eligibility rules as versioned data, and the
pure computations on them: features -> predicted consumption -> welfare group ->
decile -> programme decisions, each with its explanation.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

import yaml

from regsosek import areas
from regsosek.contracts import HouseholdProfile, WelfareGroup
from regsosek.contracts.household import ProfileMember
from regsosek.contracts.interview import (
    Asset,
    CookingFuel,
    Diploma,
    FaecesDisposal,
    FloorMaterial,
    InstalledPower,
    JobStatus,
    LightingSource,
    Relationship,
    RoofMaterial,
    SchoolParticipation,
    Sex,
    ToiletFacility,
    WallMaterial,
    WaterSource,
)

DATA = Path(__file__).resolve().parent / "data"
REASON_MAX = 500  # characters of one reason in the published decisions (regsosek.contracts.decisions.Text)


def is_urban(regency: str) -> bool:
    """BPS regency part 71-99 is a kota (city). Only the illustrative PMT's `urban` feature falls back
    to it, for a village the area reference does not classify (see `urban_feature`); poverty lines
    never use it."""
    return int(regency[2:4]) >= 71


def village_kind(area: str) -> str | None:
    """"urban" or "rural" as BPS classifies the village of `area` (a village code or an SLS id) in
    the area reference (regsosek.areas); None when the reference does not classify it."""
    urban = areas.reference().is_urban(area)
    return None if urban is None else ("urban" if urban else "rural")


def urban_feature(sls_id: str) -> float:
    """The PMT's `urban` feature: the village's classification in the area reference; a village it
    does not classify (the shipped East Kalimantan list carries no classification) falls back to the
    regency being a kota, the proxy the illustrative model was written with."""
    urban = areas.reference().is_urban(sls_id)
    return float(is_urban(sls_id[:4]) if urban is None else urban)


def features(p: HouseholdProfile) -> dict[str, float]:
    """Observable characteristics the PMT uses, from one family's profile (ages are at the
    interview date, computed by verify). Pure."""
    # Longer than ~60 lines by nature: one line per PMT feature, the whole list in one place.
    members = p.members
    n = len(members)
    ages = [m.age for m in members]
    head = p.head or members[0]
    h, e = p.housing, p.economy
    assets = set(e.assets)
    dip = head.highest_diploma
    f = {
        "log_household_size": math.log(n),
        "share_under_15": sum(a < 15 for a in ages) / n,
        "share_elderly_60": sum(a >= 60 for a in ages) / n,
        "head_female": float(head.sex is Sex.FEMALE),
        "head_diploma_sd": float(dip is Diploma.SD),
        "head_diploma_smp": float(dip is Diploma.SMP),
        "head_diploma_sma": float(dip.senior_secondary),  # general or vocational (SMA/MA/Paket C/SMLB, SMK/MAK)
        "head_diploma_tertiary": float(dip.tertiary),  # D1 to S3
        "head_works": float(head.worked_last_week),
        "head_employee": float(head.job_status is JobStatus.EMPLOYEE),
        "head_agriculture": float(head.industry is not None and head.industry.agricultural),  # KBLI section A
        "share_working": sum(m.worked_last_week for m in members) / n,
        "log_floor_area_per_capita": math.log(max(h.floor_area_m2 / n, 1.0)),
        "floor_earth": float(h.floor is FloorMaterial.EARTH),
        "wall_not_masonry": float(h.wall is not WallMaterial.MASONRY),
        "roof_thatch_or_bamboo": float(h.roof in (RoofMaterial.THATCH, RoofMaterial.BAMBOO)),
        "water_piped_or_bottled": float(h.drinking_water in (WaterSource.PIPED, WaterSource.BOTTLED)),
        "water_unprotected": float(h.drinking_water in (WaterSource.UNPROTECTED_WELL, WaterSource.UNPROTECTED_SPRING,
                                                        WaterSource.SURFACE)),
        "toilet_own": float(h.toilet is ToiletFacility.OWN),
        "toilet_none": float(h.toilet is ToiletFacility.NONE),
        "septic_tank": float(h.faeces_disposal in (FaecesDisposal.SEPTIC_TANK, FaecesDisposal.WASTEWATER_TREATMENT)),
        "no_electricity": float(h.lighting is LightingSource.NONE),
        "power_900": float(h.installed_power is InstalledPower.VA_900),
        "power_1300_plus": float(h.installed_power in (InstalledPower.VA_1300, InstalledPower.VA_2200,
                                                       InstalledPower.ABOVE_2200)),
        "cooking_wood_or_charcoal": float(h.cooking_fuel in (CookingFuel.WOOD, CookingFuel.CHARCOAL_BRIQUETTE)),
        "cooking_lpg_large_or_electric": float(h.cooking_fuel in (CookingFuel.LPG_5_5_KG_OR_MORE, CookingFuel.ELECTRICITY)),
        "asset_refrigerator": float(Asset.REFRIGERATOR in assets),
        "asset_air_conditioner": float(Asset.AIR_CONDITIONER in assets),
        "asset_water_heater": float(Asset.WATER_HEATER in assets),
        "asset_flat_tv": float(Asset.FLAT_TV in assets),
        "asset_gold_10g": float(Asset.GOLD_10G in assets),
        "asset_computer": float(Asset.COMPUTER in assets),
        "asset_motorbike": float(Asset.MOTORBIKE in assets),
        "asset_car": float(Asset.CAR in assets),
        "asset_boat": float(Asset.BOAT in assets),
        "asset_motorboat": float(Asset.MOTORBOAT in assets),
        "asset_smartphone": float(Asset.SMARTPHONE in assets),
        "asset_other_land": float(Asset.OTHER_LAND in assets),
        "asset_other_house": float(Asset.OTHER_HOUSE in assets),
        "livestock_large": float(min(e.livestock.cattle + e.livestock.buffalo + e.livestock.horse, 20)),
        "livestock_small": float(min(e.livestock.goat_sheep + e.livestock.pig, 50)),
        "internet": float(e.internet_access),
        "bank_account": float(e.bank_account),
        "urban": urban_feature(p.sls_id),
    }
    return f


# The PMT's candidate regressors, in the order `features` computes them; calibration
# fits (a selection of) these, and a survey file has one column for each.
FEATURE_NAMES: tuple[str, ...] = (
    "log_household_size", "share_under_15", "share_elderly_60", "head_female", "head_diploma_sd",
    "head_diploma_smp", "head_diploma_sma", "head_diploma_tertiary", "head_works", "head_employee",
    "head_agriculture", "share_working", "log_floor_area_per_capita", "floor_earth", "wall_not_masonry",
    "roof_thatch_or_bamboo", "water_piped_or_bottled", "water_unprotected", "toilet_own", "toilet_none",
    "septic_tank", "no_electricity", "power_900", "power_1300_plus", "cooking_wood_or_charcoal",
    "cooking_lpg_large_or_electric", "asset_refrigerator", "asset_air_conditioner", "asset_water_heater",
    "asset_flat_tv", "asset_gold_10g", "asset_computer", "asset_motorbike", "asset_car", "asset_boat",
    "asset_motorboat", "asset_smartphone", "asset_other_land", "asset_other_house", "livestock_large",
    "livestock_small", "internet", "bank_account", "urban",
)


def components(p: HouseholdProfile) -> dict[str, bool]:
    """Household components programme rules look at (PKH, PIP). Pure."""
    ages = [(m, m.age) for m in p.members]
    return {
        "pregnant_member": any(m.pregnant for m, _ in ages),
        "child_under_6": any(a < 6 for _, a in ages),
        "school_age_child": any(6 <= a <= 21 and m.relationship is not Relationship.HEAD for m, a in ages),
        "school_age_child_attending": any(6 <= a <= 21 and m.school is SchoolParticipation.ATTENDING for m, a in ages),
        "member_60_plus": any(a >= 60 for _, a in ages),
        "severe_disability": any(m.difficulty.disability for m, _ in ages),  # a lot of difficulty, or cannot
    }


@dataclass(frozen=True)
class PmtModel:
    version: str
    illustrative: bool
    intercept: float
    coefficients: dict[str, float]
    regency_effects: dict[str, float]
    decile_cutpoints: list[float]

    @classmethod
    def load(cls, path: Path) -> PmtModel:
        d = yaml.safe_load(path.read_text())
        return cls(d["version"], bool(d.get("illustrative")), float(d["intercept"]),
                   {k: float(v) for k, v in d["coefficients"].items()},
                   {str(k): float(v) for k, v in d.get("regency_effects", {}).items()},
                   [float(x) for x in d["decile_cutpoints"]])

    def contributions(self, feats: dict[str, float], regency: str) -> dict[str, float]:
        out = {k: c * feats.get(k, 0.0) for k, c in self.coefficients.items()}
        out[f"regency_{regency}"] = self.regency_effects.get(regency, 0.0)
        return out

    def predict(self, feats: dict[str, float], regency: str) -> tuple[float, dict[str, float]]:
        """Monthly per-capita consumption (IDR) and each factor's contribution to its log."""
        contrib = self.contributions(feats, regency)
        return math.exp(self.intercept + sum(contrib.values())), contrib

    def provisional_decile(self, consumption: float) -> int:
        return bisect_left(self.decile_cutpoints, consumption) + 1


@dataclass(frozen=True)
class PovertyLines:
    """The published poverty lines (data/poverty-lines-*.yaml): the province's line in force, a
    regency's urban or rural line where the file has one, the extreme-poverty line."""

    version: str
    extreme_poor: float
    vulnerable_multiple: float
    provinces: dict[str, float]  # province code -> the line in force (urban and rural together)
    regencies: dict[str, dict[str, float]]  # regency code -> {"urban": line, "rural": line}, where published
    in_force: str = ""
    source: str = ""

    @classmethod
    def load(cls, path: Path) -> PovertyLines:
        d = yaml.safe_load(path.read_text())
        in_force = str(d["in_force"])
        provinces = {str(k): float(v[in_force]) for k, v in d["provinces"].items()}
        return cls(d["version"], float(d["extreme_poor"]), float(d["vulnerable_multiple"]), provinces,
                   {str(k): {a: float(b) for a, b in v.items()} for k, v in (d.get("regencies") or {}).items()},
                   in_force, str(d.get("source", "")))

    def poverty_line(self, area: str) -> float:
        """The poverty line of an area (a regency code, a village code or an SLS id): the regency's
        urban or rural line when the file has one and the area reference classifies the village,
        otherwise the province's published line. ValueError for a province without a line (the
        event is dead-lettered with that reason, never classified against another province's line)."""
        kind = village_kind(area)
        regency = self.regencies.get(area[:4], {})
        if kind is not None and kind in regency:
            return regency[kind]
        if area[:2] not in self.provinces:
            raise ValueError(f"no poverty line for province {area[:2]} in {self.version}")
        return self.provinces[area[:2]]

    def band(self, group: WelfareGroup, area: str) -> tuple[float, float]:
        """The consumption range [low, high) that `group` means in `area` (see poverty_line)."""
        line = self.poverty_line(area)
        edges = (0.0, self.extreme_poor, line, line * self.vulnerable_multiple, math.inf)
        return edges[int(group) - 1], edges[int(group)]

    def group(self, consumption: float, area: str) -> WelfareGroup:
        line = self.poverty_line(area)
        if consumption < self.extreme_poor:
            return WelfareGroup.SANGAT_MISKIN
        if consumption < line:
            return WelfareGroup.MISKIN
        if consumption < line * self.vulnerable_multiple:
            return WelfareGroup.RENTAN_MISKIN
        return WelfareGroup.TIDAK_MISKIN


@dataclass(frozen=True)
class MemberRule:
    """Who in an eligible family an individual programme (PBI-JKN, PIP) covers: members within the age
    range, and attending school when `school` lists participations. No condition: every member."""

    min_age: int | None = None
    max_age: int | None = None
    school: tuple[str, ...] = ()

    @classmethod
    def parse(cls, d: dict) -> MemberRule:
        school = tuple(str(s) for s in d.get("school", ()))
        if unknown := [s for s in school if s not in {x.value for x in SchoolParticipation}]:
            raise ValueError(f"per_member.school: unknown school participation {unknown}")
        return cls(d.get("min_age"), d.get("max_age"), school)

    def decide(self, m: ProfileMember) -> tuple[bool, list[str]]:
        """Whether the member is covered, and why (coded facts only: age band, school participation)."""
        ok, reasons = True, []
        if self.min_age is not None or self.max_age is not None:
            lo, hi = self.min_age or 0, self.max_age if self.max_age is not None else 150
            passed = lo <= m.age <= hi
            ok &= passed
            reasons.append(f"age {'within' if passed else 'outside'} {lo}-{hi}")
        if self.school:
            passed = m.school.value in self.school
            ok &= passed
            reasons.append(f"school participation {m.school.value} {'in' if passed else 'not in'} "
                           f"{', '.join(self.school)}")
        if not reasons:
            reasons.append("every member of an eligible family")
        return ok, reasons


@dataclass(frozen=True)
class Rule:
    programme: str
    name: str
    max_decile: int | None
    max_welfare_group: int | None
    requires_any: tuple[str, ...]
    per_member: MemberRule | None = None  # an individual programme: decided per member too

    def decide(self, decile: int, group: WelfareGroup, comps: dict[str, bool]) -> tuple[bool, list[str]]:
        ok, reasons = True, []
        if self.max_decile is not None:
            passed = decile <= self.max_decile
            ok &= passed
            reasons.append(f"decile {decile} {'<=' if passed else '>'} {self.max_decile}")
        if self.max_welfare_group is not None:
            passed = int(group) <= self.max_welfare_group
            ok &= passed
            reasons.append(f"welfare group {int(group)} {'<=' if passed else '>'} {self.max_welfare_group}")
        if self.requires_any:
            present = [c for c in self.requires_any if comps.get(c)]
            ok &= bool(present)
            reasons.append(f"components present: {', '.join(present)}" if present
                           else f"none of the components: {', '.join(self.requires_any)}")
        return ok, reasons

    def longest_reason(self) -> int:
        """The most characters one of this rule's reasons can have (the contracts allow 500: the rules
        are checked once, when loaded, since the publisher does not validate every decision)."""
        parts = [len(f"none of the components: {', '.join(self.requires_any)}"), len("welfare group 4 > 4"),
                 len(f"decile 10 > {self.max_decile}")]
        if self.per_member is not None:
            school = max((len(s.value) for s in SchoolParticipation), default=0)
            parts.append(len(f"school participation {'x' * school} not in {', '.join(self.per_member.school)}"))
            parts.append(len(f"age outside {self.per_member.min_age or 0}-{self.per_member.max_age}"))
        return max(parts)

    def decide_members(self, p: HouseholdProfile, decile: int, group: WelfareGroup) -> list[tuple[int, bool, list[str]]]:
        """An individual programme's decision per member (line number, eligible, reasons): the family's
        decile and welfare group thresholds, then the member's own conditions. [] for a family programme."""
        if self.per_member is None:
            return []
        family_ok, family_reasons = self.decide(decile, group, {c: True for c in self.requires_any})
        family_reasons = [r for r in family_reasons if not r.startswith("components present")]
        out = []
        for position, m in enumerate(p.members, start=1):
            ok, reasons = self.per_member.decide(m)
            # the member's row on the form (members who died or moved keep theirs), else the position
            out.append((m.line_no or position, family_ok and ok, family_reasons + reasons))
        return out


@dataclass(frozen=True)
class RuleSet:
    version: str
    rules: tuple[Rule, ...]

    @classmethod
    def load(cls, path: Path) -> RuleSet:
        d = yaml.safe_load(path.read_text())
        rules = tuple(
            Rule(k, v.get("name", k), v.get("max_decile"), v.get("max_welfare_group"), tuple(v.get("requires_any", ())),
                 MemberRule.parse(v["per_member"]) if isinstance(v.get("per_member"), dict) else None)
            for k, v in d["programmes"].items()
        )
        for r in rules:  # what the contracts (ProgrammeDecision, MemberDecision) allow
            if not 1 <= len(r.programme) <= 40:
                raise ValueError(f"programme code {r.programme[:40]!r}: 1 to 40 characters")
            if r.longest_reason() > REASON_MAX:
                raise ValueError(f"programme {r.programme}: a reason could exceed {REASON_MAX} characters "
                                 "(too many components or school participations listed)")
        return cls(d["version"], rules)
