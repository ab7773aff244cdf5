"""BPS area reference: provinces, regencies and villages an SLS id may belong to.

Shipped: Kalimantan Timur (province 64) down to village level (`kalimantan-timur.yaml`).
Other provinces: convert a village list (CSV rows `village_id,district_id,name`, the shape
of BPS's Master File Desa exports) with

    python -m regsosek.areas from-csv villages.csv --province 65 --name "Kalimantan Utara" > kaltara.yaml

and point REGSOSEK_AREA_FILES at it (several files: separated by ':').
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path

import yaml


@dataclass
class AreaReference:
    provinces: dict[str, str] = field(default_factory=dict)
    regencies: dict[str, str] = field(default_factory=dict)
    villages: set[str] = field(default_factory=set)
    # BPS's urban/rural classification, per village (docs/DOMAIN.md: classified per village, not by
    # whether the regency is a city); a village in neither set is not classified in the reference
    urban: set[str] = field(default_factory=set)
    rural: set[str] = field(default_factory=set)
    official_villages: dict[str, int] = field(default_factory=dict)  # province -> official village count

    def add(self, doc: dict) -> None:
        p = doc["province"]
        self.provinces[str(p["code"])] = p["name"]
        self.regencies.update({str(k): v for k, v in doc.get("regencies", {}).items()})
        for district, serials in doc.get("villages", {}).items():
            self.villages.update(f"{district}{s:03d}" for s in expand(str(serials)))
        for kind, into in (("urban", self.urban), ("rural", self.rural)):
            for district, serials in (doc.get(kind) or {}).items():
                into.update(f"{district}{s:03d}" for s in expand(str(serials)))
        if isinstance(p.get("official_villages"), int):
            self.official_villages[str(p["code"])] = p["official_villages"]

    def is_urban(self, area: str) -> bool | None:
        """Whether BPS classifies the village of `area` (a village code or an SLS id) as urban; None
        when the reference does not classify it (or `area` names no village)."""
        village = area[:10]
        if len(village) < 10:
            return None
        if village in self.urban:
            return True
        return False if village in self.rural else None

    def urban_coverage(self) -> dict[str, int]:
        """How many of the reference's villages BPS's urban/rural classification covers: the policy
        page shows it, so a reader sees how often the PMT's `urban` feature had to fall back."""
        urban, rural = len(self.villages & self.urban), len(self.villages & self.rural)
        return {"villages": len(self.villages), "urban": urban, "rural": rural,
                "unclassified": len(self.villages) - urban - rural}

    def has_village(self, village: str) -> bool:
        return village in self.villages

    def knows_sls(self, sls_id: str) -> bool:
        """The SLS id's village (its first 10 digits) is in the reference."""
        return sls_id[:10] in self.villages

    def villages_of(self, regency: str) -> list[str]:
        return sorted(v for v in self.villages if v.startswith(regency))


def expand(ranges: str) -> list[int]:
    """"001-003,007" -> [1, 2, 3, 7]."""
    out: list[int] = []
    for part in ranges.split(","):
        lo, _, hi = part.strip().partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def compress(serials: list[int]) -> str:
    runs: list[tuple[int, int]] = []
    for s in sorted(set(serials)):
        if runs and s == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return ",".join(f"{a:03d}" if a == b else f"{a:03d}-{b:03d}" for a, b in runs)


@cache
def reference() -> AreaReference:
    ref = AreaReference()
    for f in sorted((p for p in files("regsosek.areas").iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name):
        ref.add(yaml.safe_load(f.read_text()))
    for extra in filter(None, os.environ.get("REGSOSEK_AREA_FILES", "").split(":")):
        ref.add(yaml.safe_load(Path(extra).read_text()))
    return ref


URBAN_CODES = {"1": "urban", "2": "rural"}  # BPS's classification column: 1 perkotaan, 2 perdesaan


def from_csv(path: Path, province: str, name: str) -> dict:
    """A reference file from CSV rows `village_id,district_id,name[,classification]`; the optional
    fourth column is BPS's urban/rural classification of the village (1 urban, 2 rural)."""
    by_district: dict[str, list[int]] = defaultdict(list)
    by_kind: dict[str, dict[str, list[int]]] = {"urban": defaultdict(list), "rural": defaultdict(list)}
    with path.open(newline="") as fh:
        for row in csv.reader(fh):
            # ASCII digits only: str.isdigit() and int() also take fullwidth and other Unicode digits
            if row and len(row[0]) == 10 and row[0].isascii() and row[0].isdigit() and row[0].startswith(province):
                by_district[row[0][:7]].append(int(row[0][7:]))
                if len(row) > 3 and (kind := URBAN_CODES.get(row[3].strip())):
                    by_kind[kind][row[0][:7]].append(int(row[0][7:]))
    regencies = sorted({d[:4] for d in by_district})
    doc = {"province": {"code": province, "name": name},
           "regencies": {r: r for r in regencies},  # names: fill in from the regency list
           "villages": {d: compress(s) for d, s in sorted(by_district.items())}}
    for kind, districts in by_kind.items():
        if districts:
            doc[kind] = {d: compress(s) for d, s in sorted(districts.items())}
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regsosek.areas")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("from-csv", help="convert a village list CSV into a reference file (YAML on stdout)")
    c.add_argument("csv", type=Path)
    c.add_argument("--province", required=True)
    c.add_argument("--name", required=True)
    k = sub.add_parser("check", help="is this SLS id's village in the reference?")
    k.add_argument("sls_id")
    sub.add_parser("summary")
    a = p.parse_args(argv)
    if a.cmd == "from-csv":
        sys.stdout.write(yaml.safe_dump(from_csv(a.csv, a.province, a.name), sort_keys=False))
    elif a.cmd == "check":
        ok = reference().knows_sls(a.sls_id)
        print("known" if ok else "unknown")
        return 0 if ok else 1
    else:
        ref = reference()
        for code, name in sorted(ref.regencies.items()):
            print(f"{code} {name}: {len(ref.villages_of(code))} villages")
        for code, official in sorted(ref.official_villages.items()):
            listed = sum(v.startswith(code) for v in ref.villages)
            print(f"province {code}: {listed} villages listed, {official} in the official count")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
