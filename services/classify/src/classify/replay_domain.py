"""What a replay decides for one page of stored families, pure, from their stored profile documents.

A replay classifies every stored family again with the configured model, poverty lines and rules,
and re-publishes only the families whose outcome (welfare group, decile, any programme's or member's
eligibility) changed. Most families' outcome does not change; for them the replay needs only the
columns a classification stores, not the classification's explanation, reasons or events. This
module computes exactly those columns from the profile *document* as stored (the JSON of
`HouseholdProfile`, trusted: it was validated before it was stored) without building the pydantic
models, with the same arithmetic as `domain.classify` (`model.features`, `PmtModel.predict`,
`PovertyLines.group`, `ranking.rank_value`, the placement, `Rule.decide` and `Rule.decide_members`),
so that a family it calls unchanged is one the per-family classification would store with the same
values (tests/test_classify_replay_domain.py checks this over generated profiles).

`ReplayJudge.judge(row, placement_of)` gives, per family, either the columns to store (outcome
unchanged: the store writes them for a whole page in one statement, nothing is published; the list of
eligible programmes too, whose order follows the rules file) or None:
the outcome changed, or the document is one this path does not read; the replay then classifies
that family the per-family way (`Config.classify`) and publishes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from classify.domain import FKP_NOTE, Config, fkp_note
from classify.model import urban_feature
from classify.ranking import Placement, Ranked, rank_value
from regsosek.contracts import WelfareGroup
from regsosek.contracts.interview import (
    Asset,
    CookingFuel,
    DifficultyLevel,
    Diploma,
    FaecesDisposal,
    FloorMaterial,
    Industry,
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

# The enum values as the documents hold them (model_dump(mode="json")).
_FEMALE = Sex.FEMALE.value
_HEAD = Relationship.HEAD.value
_SD, _SMP = Diploma.SD.value, Diploma.SMP.value
_SENIOR_SECONDARY = {d.value for d in Diploma if d.senior_secondary}  # the contract says which codes
_TERTIARY = {d.value for d in Diploma if d.tertiary}
_EMPLOYEE = JobStatus.EMPLOYEE.value
_AGRICULTURAL = {i.value for i in Industry if i.agricultural}  # KBLI section A, any sub-sector
_EARTH = FloorMaterial.EARTH.value
_MASONRY = WallMaterial.MASONRY.value
_THATCH_BAMBOO = {RoofMaterial.THATCH.value, RoofMaterial.BAMBOO.value}
_PIPED_BOTTLED = {WaterSource.PIPED.value, WaterSource.BOTTLED.value}
_UNPROTECTED = {WaterSource.UNPROTECTED_WELL.value, WaterSource.UNPROTECTED_SPRING.value, WaterSource.SURFACE.value}
_TOILET_OWN, _TOILET_NONE = ToiletFacility.OWN.value, ToiletFacility.NONE.value
_SEPTIC = {FaecesDisposal.SEPTIC_TANK.value, FaecesDisposal.WASTEWATER_TREATMENT.value}
_NO_LIGHT = LightingSource.NONE.value
_VA_900 = InstalledPower.VA_900.value
_VA_1300_PLUS = {InstalledPower.VA_1300.value, InstalledPower.VA_2200.value, InstalledPower.ABOVE_2200.value}
_WOOD_CHARCOAL = {CookingFuel.WOOD.value, CookingFuel.CHARCOAL_BRIQUETTE.value}
_LPG_LARGE_ELECTRIC = {CookingFuel.LPG_5_5_KG_OR_MORE.value, CookingFuel.ELECTRICITY.value}
_ATTENDING = SchoolParticipation.ATTENDING.value
_SEVERE = {d.value for d in DifficultyLevel if d.disability}
_NO_DIFFICULTY = DifficultyLevel.NONE.value
_ASSETS = {name: a.value for name, a in (
    ("asset_refrigerator", Asset.REFRIGERATOR), ("asset_air_conditioner", Asset.AIR_CONDITIONER),
    ("asset_water_heater", Asset.WATER_HEATER), ("asset_flat_tv", Asset.FLAT_TV), ("asset_gold_10g", Asset.GOLD_10G),
    ("asset_computer", Asset.COMPUTER), ("asset_motorbike", Asset.MOTORBIKE), ("asset_car", Asset.CAR),
    ("asset_boat", Asset.BOAT), ("asset_motorboat", Asset.MOTORBOAT), ("asset_smartphone", Asset.SMARTPHONE),
    ("asset_other_land", Asset.OTHER_LAND), ("asset_other_house", Asset.OTHER_HOUSE))}


def features_of(doc: dict[str, Any], urban: Callable[[str], float] | None = None) -> dict[str, float]:
    """`model.features` of the profile stored as `doc`, the same values in the same order (`urban`:
    `model.urban_feature`, looked up once per SLS by the caller)."""
    members = doc["members"]
    n = len(members)
    ages = [m["age"] for m in members]
    head = next((m for m in members if m["relationship"] == _HEAD), members[0])
    h = doc["housing"]
    e = doc.get("economy") or {}
    assets = set(e.get("assets", ()))
    live = e.get("livestock") or {}
    dip = head["highest_diploma"]
    power = h.get("installed_power")
    water, fuel = h["drinking_water"], h["cooking_fuel"]
    f = {
        "log_household_size": math.log(n),
        "share_under_15": sum(a < 15 for a in ages) / n,
        "share_elderly_60": sum(a >= 60 for a in ages) / n,
        "head_female": float(head["sex"] == _FEMALE),
        "head_diploma_sd": float(dip == _SD),
        "head_diploma_smp": float(dip == _SMP),
        "head_diploma_sma": float(dip in _SENIOR_SECONDARY),
        "head_diploma_tertiary": float(dip in _TERTIARY),
        "head_works": float(head["worked_last_week"]),
        "head_employee": float(head.get("job_status") == _EMPLOYEE),
        "head_agriculture": float(head.get("industry") in _AGRICULTURAL),
        "share_working": sum(m["worked_last_week"] for m in members) / n,
        "log_floor_area_per_capita": math.log(max(h["floor_area_m2"] / n, 1.0)),
        "floor_earth": float(h["floor"] == _EARTH),
        "wall_not_masonry": float(h["wall"] != _MASONRY),
        "roof_thatch_or_bamboo": float(h["roof"] in _THATCH_BAMBOO),
        "water_piped_or_bottled": float(water in _PIPED_BOTTLED),
        "water_unprotected": float(water in _UNPROTECTED),
        "toilet_own": float(h["toilet"] == _TOILET_OWN),
        "toilet_none": float(h["toilet"] == _TOILET_NONE),
        "septic_tank": float(h["faeces_disposal"] in _SEPTIC),
        "no_electricity": float(h["lighting"] == _NO_LIGHT),
        "power_900": float(power == _VA_900),
        "power_1300_plus": float(power in _VA_1300_PLUS),
        "cooking_wood_or_charcoal": float(fuel in _WOOD_CHARCOAL),
        "cooking_lpg_large_or_electric": float(fuel in _LPG_LARGE_ELECTRIC),
    }
    for name, value in _ASSETS.items():
        f[name] = float(value in assets)
    f["livestock_large"] = float(min(live.get("cattle", 0) + live.get("buffalo", 0) + live.get("horse", 0), 20))
    f["livestock_small"] = float(min(live.get("goat_sheep", 0) + live.get("pig", 0), 50))
    f["internet"] = float(e.get("internet_access", False))
    f["bank_account"] = float(e.get("bank_account", False))
    f["urban"] = urban(doc["sls_id"]) if urban is not None else urban_feature(doc["sls_id"])
    return f


def components_of(members: list[dict[str, Any]]) -> dict[str, bool]:
    """`model.components` of the stored members (one pass over them)."""
    pregnant = under_6 = school_age = attending = elderly = severe = False
    for m in members:
        age = m["age"]
        if m.get("pregnant", False):
            pregnant = True
        if age < 6:
            under_6 = True
        elif age <= 21:
            if m["relationship"] != _HEAD:
                school_age = True
            if m["school"] == _ATTENDING:
                attending = True
        elif age >= 60:
            elderly = True
        if m.get("difficulty", _NO_DIFFICULTY) in _SEVERE:
            severe = True
    return {"pregnant_member": pregnant, "child_under_6": under_6, "school_age_child": school_age,
            "school_age_child_attending": attending, "member_60_plus": elderly, "severe_disability": severe}


@dataclass(frozen=True)
class StoredOutcome:
    """One family's row as the replay reads it (its profile document and what is stored of its classification)."""

    family_id: str
    sls_id: str
    profile: dict[str, Any]  # the stored document; with `predicted` given, its members only: all `judge` reads then
    rank_value: float
    decile: int
    decile_basis: str
    ranking_id: int | None
    welfare_group: int
    eligible: list[str]
    eligibility: dict[str, bool]
    member_eligibility: dict[str, bool]
    fkp_group: int | None  # the latest village consultation decision's group, if any
    predicted: float | None = None  # the stored prediction when it was made with the configured model and lines


@dataclass(frozen=True)
class Restated:
    """The columns a classification of an unchanged family stores (its outcome, `eligible` and profile stay)."""

    family_id: str
    predicted: float
    rank_value: float
    decile: int
    decile_basis: str
    ranking_id: int | None
    eligible: list[str]  # the eligible programmes in the rules' order (a new rules file may order them otherwise)


class ReplayJudge:
    """`Config.classify` reduced to what a replay compares and stores, over profile documents."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        m = cfg.model
        self.coefficients = list(m.coefficients.items())
        self.effects = m.regency_effects
        self.intercept = m.intercept
        self.rules = cfg.rules.rules
        # per rule: (programme, max decile, max welfare group, components any of which it requires, and for a
        # per-member rule (lowest age, highest age, whether ages bound it, schooling that counts) else None)
        self._rules = [(r.programme, r.max_decile, r.max_welfare_group, r.requires_any,
                        None if r.per_member is None else (
                            r.per_member.min_age or 0,
                            r.per_member.max_age if r.per_member.max_age is not None else 150,
                            r.per_member.min_age is not None or r.per_member.max_age is not None,
                            r.per_member.school))
                       for r in self.rules]
        # the store writes the eligible list as one space-separated text: programme codes must be single words
        self.readable = all(r.programme and not any(c.isspace() for c in r.programme) for r in self.rules)
        self._groups: dict[str, tuple[float, float]] = {}  # sls id -> (poverty line, vulnerability line)
        self._urbans: dict[str, float] = {}  # sls id -> the PMT's urban feature

    def _urban(self, sls_id: str) -> float:
        u = self._urbans.get(sls_id)
        if u is None:
            u = self._urbans[sls_id] = urban_feature(sls_id)
        return u

    def predicted(self, doc: dict[str, Any]) -> float:
        """`PmtModel.predict(features(p), p.regency)[0]`: the same terms summed in the same order."""
        feats = features_of(doc, self._urban)
        terms = [c * feats.get(k, 0.0) for k, c in self.coefficients]
        terms.append(self.effects.get(doc["sls_id"][:4], 0.0))
        return math.exp(self.intercept + sum(terms))

    def group(self, predicted: float, sls_id: str) -> WelfareGroup:
        """`PovertyLines.group`, the lines of each SLS looked up once."""
        lines = self._groups.get(sls_id)
        if lines is None:
            line = self.cfg.lines.poverty_line(sls_id)
            lines = self._groups[sls_id] = (line, line * self.cfg.lines.vulnerable_multiple)
        if predicted < self.cfg.lines.extreme_poor:
            return WelfareGroup.SANGAT_MISKIN
        if predicted < lines[0]:
            return WelfareGroup.MISKIN
        if predicted < lines[1]:
            return WelfareGroup.RENTAN_MISKIN
        return WelfareGroup.TIDAK_MISKIN

    def forget_lines(self) -> None:
        """Drops the poverty lines looked up so far (called per page: memory stays bounded)."""
        self._groups.clear()
        self._urbans.clear()

    def judge(self, r: StoredOutcome, placement_of: Callable[[str], Placement]) -> Restated | None:
        """The columns to store for `r` when its outcome is unchanged, else None (classify it the per-family
        way). `placement_of(sls_id)`: the placement for a family whose rank value changed (the latest
        ranking's cut-points or the model's reference), as the replay gives `Config.classify`."""
        if not self.readable:
            return None
        doc = r.profile
        fkp = None if r.fkp_group is None else WelfareGroup(r.fkp_group)
        # the configured model and lines computed the stored prediction (and rank value) already: a replay to
        # new rules alone needs no PMT (versions name their files' content, as every replay assumes)
        predicted = self.predicted(doc) if r.predicted is None else r.predicted
        group = fkp if fkp is not None else self.group(predicted, r.sls_id)
        if int(group) != r.welfare_group:
            return None
        value = rank_value(predicted, fkp, r.sls_id, self.cfg.lines)
        placement: Placement = (Ranked(r.decile, r.decile_basis, r.ranking_id) if value == r.rank_value
                                else placement_of(r.sls_id))
        decile, basis = placement.place(value)
        if decile != r.decile:
            return None
        if fkp is not None:
            basis = basis.removesuffix(fkp_note(basis)) + FKP_NOTE.format(int(fkp))
        eligible = self._eligible_if_same(r, decile, group)
        if eligible is None:
            return None
        return Restated(r.family_id, predicted, value, decile, basis, placement.ranking_id, eligible)

    def _eligible_if_same(self, r: StoredOutcome, decile: int, group: WelfareGroup) -> list[str] | None:
        """The eligible programmes in the rules' order when every programme's and member's eligibility is
        what `Rule.decide` and `Rule.decide_members` decide now, else None."""
        members = r.profile["members"]
        comps: dict[str, bool] | None = None
        eligibility: dict[str, bool] = {}
        member: dict[str, bool] = {}
        g = int(group)
        lines: list[Any] | None = None  # each member's line number (or position)
        for programme, max_decile, max_group, requires_any, per_member in self._rules:
            thresholds = ((max_decile is None or decile <= max_decile)
                          and (max_group is None or g <= max_group))
            ok = thresholds
            if requires_any:
                if comps is None:
                    comps = components_of(members)
                ok = ok and any(comps.get(c) for c in requires_any)
            eligibility[programme] = ok
            if per_member is not None:
                lo, hi, ranged, school = per_member
                if lines is None:
                    lines = [m.get("line_no") or position for position, m in enumerate(members, start=1)]
                for line, m in zip(lines, members, strict=True):
                    member[f"{programme}:{line}"] = thresholds and (not ranged or lo <= m["age"] <= hi) and (
                        not school or m["school"] in school)
        if eligibility != r.eligibility or member != r.member_eligibility:
            return None
        return [p for p, ok in eligibility.items() if ok]
