"""A synthetic consumption survey with a KNOWN answer, to check PMT calibration.

    python -m regsosek_tools.survey --seed 7 --families 20000 --out survey.csv
    python -m regsosek_tools.survey --seed 7 --families 20000 --out survey.csv --truth model.yaml --noise 0.35

The families are the sample generator's (sample.py: same seed, same families, drawn from
a latent wealth per family); each row holds a family's PMT features exactly as classify
computes them from its interview (classify.model.features), its regency, and an observed
monthly per-capita consumption drawn as

    log(consumption) = intercept + sum(coefficient * feature) + regency effect + e,   e ~ Normal(0, noise)

with the intercept, coefficients and regency effects of the --truth model file (by default
the shipped illustrative model). Calibrating on the file (python -m regsosek_tools.calibration)
should recover those numbers within their standard errors; only the level is shared
between the intercept and the regency effects (their sums are what is identified).

Columns: family_id, regency, one per feature (classify.model.FEATURE_NAMES),
consumption_per_capita (rupiah, rounded), weight (1: a simple random sample).
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from pathlib import Path

from classify.model import DATA, FEATURE_NAMES, PmtModel, features
from regsosek.contracts import household_profile
from regsosek_tools.sample import generate

DEFAULT_TRUTH = DATA / "pmt-illustrative-2022.1.yaml"
DEFAULT_NOISE = 0.3
COLUMNS = ("family_id", "regency", *FEATURE_NAMES, "consumption_per_capita", "weight")


def rows(seed: int, families: int, truth: PmtModel, noise: float):
    """One dict per family, deterministic in (seed, families, truth, noise)."""
    rng = random.Random(f"regsosek-survey:{seed}")
    for iv in generate(seed, families).interviews:
        regency = iv.location.sls_id[:4]
        f = features(household_profile(iv))  # what classify computes from verify's event
        log_c = (truth.intercept + sum(c * f[k] for k, c in truth.coefficients.items())
                 + truth.regency_effects.get(regency, 0.0) + rng.gauss(0.0, noise))
        yield {"family_id": iv.family_id, "regency": regency, **{k: f[k] for k in FEATURE_NAMES},
               "consumption_per_capita": round(math.exp(log_c)), "weight": 1}


def write(path: Path, seed: int, families: int, truth: PmtModel, noise: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for row in rows(seed, families, truth, noise):
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.survey", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=2022)
    p.add_argument("--families", type=int, default=20000)
    p.add_argument("--out", type=Path, required=True, help="CSV file to write")
    p.add_argument("--truth", type=Path, default=DEFAULT_TRUTH,
                   help="model file whose coefficients generate consumption (default: the shipped illustrative model)")
    p.add_argument("--noise", type=float, default=DEFAULT_NOISE,
                   help="standard deviation of the log-consumption noise (default %(default)s)")
    a = p.parse_args(argv)
    if a.families < 1 or a.noise < 0:
        p.error("--families must be at least 1 and --noise not negative")
    truth = PmtModel.load(a.truth)
    n = write(a.out, a.seed, a.families, truth, a.noise)
    print(f"wrote {n} families to {a.out}: consumption from {truth.version} + Normal(0, {a.noise}) noise, seed {a.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
