"""Calibrate the PMT: fit a model file from a survey by least squares.

    python -m regsosek_tools.calibration --survey survey.csv --out pmt-calibrated.yaml \\
        [--regency-effects] [--select none|pvalue|aic] [--alpha 0.05] [--version V] \\
        [--poverty-lines FILE] [--min-regency-rows 30]

**Survey file** (CSV, one row per family): ``consumption_per_capita`` (observed monthly
per-capita consumption, rupiah), ``regency`` (BPS code, 4 digits), one column per PMT
feature as classify computes it from a family's profile (``classify.model.FEATURE_NAMES``; a
feature without a column is left out), and optionally ``weight`` (survey weight; every
sum, the fit included, is then weighted). Rows with a non-positive consumption are
dropped and counted. ``python -m regsosek_tools.survey`` writes such a file with known
true coefficients.

**Model**: ordinary (or weighted) least squares of log consumption on an intercept, the
selected features and, with ``--regency-effects``, one effect per regency with at least
``--min-regency-rows`` rows (the others share the intercept). Regency effects are then
centred (their row-weighted mean moved into the intercept), so a regency missing from
the survey gets the average level.

**Variable selection**, in this order, each exclusion written to the model file with
its reason:

1. *no variance*: a feature constant over the survey (e.g. an asset nobody owns)
   cannot be estimated;
2. *collinearity*: going through the columns in order (regency effects first, then
   the features in FEATURE_NAMES order), a feature that is an exact linear combination
   of the intercept and the columns already kept (residual norm below 1e-8 of its own)
   is dropped; e.g. ``urban`` when regency effects are fitted, since a regency is
   either a kota or a kabupaten;
3. optional *backward elimination* over the features (never the intercept or regency
   effects): ``--select pvalue`` drops, one at a time, the feature with the largest
   two-sided p-value while it exceeds ``--alpha`` (t statistics with the normal
   approximation, fine for surveys of thousands of rows); ``--select aic`` drops, one
   at a time, the feature whose removal lowers AIC = n log(RSS/n) + 2k the most, while
   one does. The default ``none`` keeps every estimable feature.

**Output**: a new model file with ``illustrative: false``, a version (``--version``,
default ``pmt-calibrated-<first 12 hex digits of the survey's sha256>``), the
coefficients, regency effects, reference decile cut-points (the weighted deciles of
predicted consumption over the survey, used until the registered population is
re-ranked) and a ``fit`` section: survey file and hash, rows, method, selection with
exclusions, R², standard errors, and the report below. Classify uses it when
REGSOSEK_PMT_MODEL_FILE points at it; then replay (``python -m classify.replay``).

**Fit report** (printed and stored), in sample: R² of log consumption, and the targeting
errors of the predicted consumption against the observed one, (a) at the poverty line of
each row's regency (``--poverty-lines``, default the configured file) and (b) for the
bottom 40% (by weighted rank). Exclusion error = share of the truly targeted (observed
below the line / in the bottom 40%) that the prediction misses; inclusion error = share
of those the prediction targets who are not truly targeted.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import math
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from classify.model import FEATURE_NAMES, PovertyLines
from classify.settings import ClassifySettings
from regsosek import progress

SELECTIONS = ("none", "pvalue", "aic")
COLLINEAR_TOL = 1e-8


class SurveyError(ValueError):
    """The survey file cannot be used (missing columns, no usable rows)."""


@dataclass
class Survey:
    path: Path
    sha256: str
    regency: list[str]
    features: dict[str, np.ndarray]  # the FEATURE_NAMES columns present
    consumption: np.ndarray
    weight: np.ndarray
    dropped_rows: int

    @property
    def rows(self) -> int:
        return len(self.consumption)


def read_survey(path: Path) -> Survey:
    if path.suffix.lower() not in (".csv", ".txt"):
        raise SurveyError(f"{path}: only CSV survey files are read")
    raw = path.read_bytes()
    text_lines = raw.decode("utf-8-sig").splitlines()
    reader = csv.DictReader(text_lines)
    columns = set(reader.fieldnames or ())
    missing = {"consumption_per_capita", "regency"} - columns
    if missing:
        raise SurveyError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    present = [f for f in FEATURE_NAMES if f in columns]
    weighted = "weight" in columns
    regency: list[str] = []
    cols: dict[str, list[float]] = {f: [] for f in present}
    cons: list[float] = []
    weight: list[float] = []
    dropped = 0
    rows = progress.iterate(reader, "calibrate: reading the survey", total=max(len(text_lines) - 1, 0), unit="rows")
    for line, row in enumerate(rows, start=2):
        try:
            c = float(row["consumption_per_capita"])
            w = float(row["weight"]) if weighted else 1.0
            vals = [float(row[f]) for f in present]
        except (TypeError, ValueError) as e:
            raise SurveyError(f"{path}:{line}: not a number ({e})") from None
        if not c > 0 or not w > 0 or not all(math.isfinite(v) for v in vals):
            dropped += 1
            continue
        regency.append(str(row["regency"]).strip())
        cons.append(c)
        weight.append(w)
        for f, v in zip(present, vals, strict=True):
            cols[f].append(v)
    if len(cons) < 2:
        raise SurveyError(f"{path}: fewer than 2 usable rows")
    return Survey(path, hashlib.sha256(raw).hexdigest(), regency, {f: np.asarray(v) for f, v in cols.items()},
                  np.asarray(cons), np.asarray(weight), dropped)


# ---------------------------------------------------------------- least squares


@dataclass
class Ols:
    beta: np.ndarray
    se: np.ndarray
    rss: float
    n: float  # weighted number of rows (rows when unweighted)
    k: int

    @property
    def aic(self) -> float:
        return self.n * math.log(self.rss / self.n) + 2 * self.k


def _ols_normal(xtx: np.ndarray, xty: np.ndarray, yty: float, idx: list[int], n: float, rows: int) -> Ols:
    """Least squares on the columns `idx`, from the cross-products (fast, for selection)."""
    a = xtx[np.ix_(idx, idx)]
    inv = np.linalg.inv(a)
    beta = inv @ xty[idx]
    rss = max(float(yty - beta @ xty[idx]), 1e-300)
    sigma2 = rss / max(rows - len(idx), 1) * (rows / n)
    se = np.sqrt(np.maximum(np.diag(inv) * sigma2, 0.0))
    return Ols(beta, se, rss, n, len(idx))


def _p_value(t: float) -> float:
    return math.erfc(abs(t) / math.sqrt(2.0))  # two-sided, normal approximation to the t distribution


def _independent(x: np.ndarray, order: list[int], fixed: int) -> list[int]:
    """Columns of `order` kept by greedy Gram-Schmidt: the first `fixed` are always kept."""
    basis: list[np.ndarray] = []
    kept: list[int] = []
    for pos, j in enumerate(order):
        v = x[:, j].astype(float)
        norm = np.linalg.norm(v)
        r = v.copy()
        for _ in range(2):  # twice: re-orthogonalisation keeps it numerically honest
            for q in basis:
                r -= (q @ r) * q
        rn = np.linalg.norm(r)
        if pos < fixed or (norm > 0 and rn > COLLINEAR_TOL * norm):
            if rn > 0:
                basis.append(r / rn)
            kept.append(j)
    return kept


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: list[float]) -> list[float]:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cum = np.cumsum(w) / w.sum()
    return [float(v[min(int(np.searchsorted(cum, q, side="left")), len(v) - 1)]) for q in qs]


# ---------------------------------------------------------------- targeting


@dataclass
class Targeting:
    share_targeted: float  # weighted share of rows truly targeted
    exclusion_error: float
    inclusion_error: float

    def as_dict(self) -> dict:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


def targeting(truly: np.ndarray, predicted: np.ndarray, w: np.ndarray) -> Targeting:
    tw, pw = float(w[truly].sum()), float(w[predicted].sum())
    missed = float(w[truly & ~predicted].sum())
    leaked = float(w[predicted & ~truly].sum())
    return Targeting(tw / float(w.sum()), missed / tw if tw else 0.0, leaked / pw if pw else 0.0)


def bottom_share(values: np.ndarray, w: np.ndarray, share: float) -> np.ndarray:
    """Rows in the lowest `share` of the weighted distribution of `values`."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    inside = np.zeros(len(values), dtype=bool)
    inside[order[cum <= share + 1e-12]] = True
    return inside


# ---------------------------------------------------------------- the fit


@dataclass
class Fit:
    version: str
    intercept: float
    coefficients: dict[str, float]
    regency_effects: dict[str, float]
    standard_errors: dict[str, float]
    excluded: dict[str, str]  # feature -> why it is not in the model
    r2: float
    adj_r2: float
    sigma: float
    cutpoints: list[float]
    poverty_line: Targeting
    bottom_40: Targeting
    rows: int
    dropped_rows: int
    survey: Survey
    selection: str
    alpha: float
    lines_version: str
    fitted_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def document(self) -> dict:
        return {
            "version": self.version,
            "illustrative": False,
            "target": "log monthly per-capita consumption (IDR)",
            "intercept": round(self.intercept, 6),
            "coefficients": {k: round(v, 6) for k, v in self.coefficients.items()},
            "regency_effects": {k: round(v, 6) for k, v in self.regency_effects.items()},
            "decile_cutpoints": [round(c) for c in self.cutpoints],
            "fit": {
                "method": "weighted least squares" if self.weighted else "ordinary least squares",
                "command": "python -m regsosek_tools.calibration",
                "survey": {"file": self.survey.path.name, "sha256": self.survey.sha256, "rows": self.rows,
                           "dropped_rows": self.dropped_rows},
                "fitted_at": self.fitted_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "selection": {"method": self.selection, **({"alpha": self.alpha} if self.selection == "pvalue" else {}),
                              "excluded": dict(self.excluded)},
                "r2": round(self.r2, 4),
                "adjusted_r2": round(self.adj_r2, 4),
                "residual_sd": round(self.sigma, 4),
                "standard_errors": {k: round(v, 6) for k, v in self.standard_errors.items()},
                "report": {"poverty_lines": self.lines_version, "poverty_line": self.poverty_line.as_dict(),
                           "bottom_40": self.bottom_40.as_dict()},
            },
        }

    @property
    def weighted(self) -> bool:
        return bool(np.any(self.survey.weight != 1.0))

    def report(self) -> str:
        feats = len(self.coefficients)
        lines = [
            f"calibrated {self.version} from {self.survey.path.name}: {self.rows} rows"
            f" ({self.dropped_rows} dropped), {feats} features"
            + (f" + {len(self.regency_effects)} regency effects" if self.regency_effects else ""),
            f"  R² {self.r2:.4f} (adjusted {self.adj_r2:.4f}), residual s.d. {self.sigma:.4f} (log consumption, in sample)",
            f"  selection: {self.selection}" + (f" (alpha {self.alpha})" if self.selection == "pvalue" else ""),
        ]
        for k, why in self.excluded.items():
            lines.append(f"    excluded {k}: {why}")
        lines.append(f"  targeting against observed consumption (poverty lines {self.lines_version}):")
        lines.append(f"    {'':26}{'targeted':>10}{'exclusion error':>18}{'inclusion error':>18}")
        for name, t in (("below the poverty line", self.poverty_line), ("bottom 40%", self.bottom_40)):
            lines.append(f"    {name:26}{t.share_targeted:>10.1%}{t.exclusion_error:>18.1%}{t.inclusion_error:>18.1%}")
        return "\n".join(lines)


@dataclass
class Design:
    """The design matrix of a fit: intercept, regency dummies, then the features with variance."""

    names: list[str]
    x: np.ndarray
    fixed: int  # columns before the features (intercept and regency effects), never eliminated
    effects: list[str]  # regencies with an effect of their own
    baseline: str | None  # the regency that shares the intercept
    excluded: dict[str, str]


def design(survey: Survey, regency_effects: bool, min_regency_rows: int) -> Design:
    """Columns: intercept, regency dummies (all but the most frequent of those with enough rows), features."""
    n_rows = survey.rows
    excluded: dict[str, str] = {f: "no column in the survey" for f in FEATURE_NAMES if f not in survey.features}
    names: list[str] = ["(intercept)"]
    cols: list[np.ndarray] = [np.ones(n_rows)]
    effects: list[str] = []
    baseline = None
    if regency_effects:
        counts: dict[str, int] = {}
        for r in survey.regency:
            counts[r] = counts.get(r, 0) + 1
        eligible = sorted((r for r, c in counts.items() if c >= min_regency_rows), key=lambda r: (-counts[r], r))
        regs = np.asarray(survey.regency)
        for r in sorted(eligible[1:]):
            names.append(f"regency_{r}")
            cols.append((regs == r).astype(float))
            effects.append(r)
        baseline = eligible[0] if eligible else None
    fixed = len(names)
    for f in FEATURE_NAMES:
        if f not in survey.features:
            continue
        col = survey.features[f]
        if np.ptp(col) == 0.0:
            excluded[f] = "no variance in the survey"
            continue
        names.append(f)
        cols.append(col.astype(float))
    return Design(names, np.column_stack(cols), fixed, effects, baseline, excluded)


def eliminate(d: Design, xw: np.ndarray, yw: np.ndarray, n_eff: float, kept: list[int], selection: str,
              alpha: float) -> None:
    """Backward elimination on the cross-products: removes features from `kept`, recording why in
    `d.excluded`."""
    if selection == "none":
        return
    n_rows = len(yw)
    xtx, xty, yty = xw.T @ xw, xw.T @ yw, float(yw @ yw)
    features_idx = [j for j in kept if j >= d.fixed]
    steps = progress.Progress("calibrate: backward elimination", len(features_idx), unit="steps")
    while features_idx:
        steps.update(1)
        idx = list(kept)
        cur = _ols_normal(xtx, xty, yty, idx, n_eff, n_rows)
        if selection == "pvalue":
            pv = {j: _p_value(cur.beta[idx.index(j)] / cur.se[idx.index(j)]) if cur.se[idx.index(j)] > 0 else 0.0
                  for j in features_idx}
            worst = max(features_idx, key=lambda j: (pv[j], d.names[j]))
            if pv[worst] <= alpha:
                break
            d.excluded[d.names[worst]] = f"backward elimination: p = {pv[worst]:.3g} > {alpha}"
        else:
            trial = {j: _ols_normal(xtx, xty, yty, [i for i in idx if i != j], n_eff, n_rows).aic for j in features_idx}
            worst = min(features_idx, key=lambda j: (trial[j], d.names[j]))
            if trial[worst] >= cur.aic:
                break
            d.excluded[d.names[worst]] = f"backward elimination: AIC {cur.aic:.1f} -> {trial[worst]:.1f} without it"
        kept.remove(worst)
        features_idx.remove(worst)
    steps.close()


def fit(survey: Survey, lines: PovertyLines, *, regency_effects: bool = False, selection: str = "none",
        alpha: float = 0.05, min_regency_rows: int = 30, version: str | None = None) -> Fit:
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}")
    n_rows = survey.rows
    y = np.log(survey.consumption)
    w = survey.weight
    d = design(survey, regency_effects, min_regency_rows)
    names, x, excluded = d.names, d.x, d.excluded
    sw = np.sqrt(w)
    xw, yw = x * sw[:, None], y * sw

    kept = _independent(xw, list(range(len(names))), d.fixed)
    for j in range(d.fixed, len(names)):
        if j not in kept:
            excluded[names[j]] = "collinear with the intercept, regency effects and features before it"
    n_eff = float(w.sum())
    eliminate(d, xw, yw, n_eff, kept, selection, alpha)

    # The final fit, by a least-squares solver on the kept columns.
    xk = xw[:, kept]
    beta, *_ = np.linalg.lstsq(xk, yw, rcond=None)
    resid = yw - xk @ beta
    rss = float(resid @ resid)
    ybar = float((w * y).sum() / n_eff)
    tss = float((w * (y - ybar) ** 2).sum())
    k = len(kept)
    r2 = 1.0 - rss / tss if tss > 0 else 0.0
    adj = 1.0 - (1.0 - r2) * (n_rows - 1) / max(n_rows - k, 1)
    sigma2 = rss / max(n_rows - k, 1) * (n_rows / n_eff)
    cov = np.linalg.inv(xk.T @ xk) * sigma2
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    by_name = {names[j]: float(b) for j, b in zip(kept, beta, strict=True)}
    se_by_name = {names[j]: float(s) for j, s in zip(kept, se, strict=True)}
    intercept, reg = _centred_effects(d, survey, w, by_name)
    coefficients = {f: by_name[f] for f in FEATURE_NAMES if f in by_name}

    predicted = np.exp(x[:, kept] @ beta)
    poverty = np.asarray([lines.poverty_line(r) for r in survey.regency])
    at_line = targeting(survey.consumption < poverty, predicted < poverty, w)
    b40 = targeting(bottom_share(survey.consumption, w, 0.4), bottom_share(predicted, w, 0.4), w)
    cuts = weighted_quantiles(predicted, w, [d / 10 for d in range(1, 10)])
    return Fit(
        version=version or f"pmt-calibrated-{survey.sha256[:12]}", intercept=intercept, coefficients=coefficients,
        regency_effects=reg, standard_errors={k: v for k, v in se_by_name.items() if k != "(intercept)"},
        excluded=excluded, r2=r2, adj_r2=adj, sigma=math.sqrt(sigma2), cutpoints=cuts, poverty_line=at_line,
        bottom_40=b40, rows=n_rows, dropped_rows=survey.dropped_rows, survey=survey, selection=selection,
        alpha=alpha, lines_version=lines.version,
    )


def _centred_effects(d: Design, survey: Survey, w: np.ndarray, by_name: dict[str, float]) -> tuple[float, dict[str, float]]:
    """The intercept and regency effects, the effects centred (their row-weighted mean moved into the
    intercept); takes them out of `by_name`."""
    intercept = by_name.pop("(intercept)")
    reg = {r: by_name.pop(f"regency_{r}") for r in d.effects}
    if d.baseline is not None:
        reg[d.baseline] = 0.0
        regs_arr = np.asarray(survey.regency)
        level = sum(reg[r] * float(w[regs_arr == r].sum()) for r in reg) / float(
            sum(float(w[regs_arr == r].sum()) for r in reg))
        intercept += level
        reg = {r: reg[r] - level for r in sorted(reg)}
    return intercept, reg


HEADER = """\
# Proxy means test (PMT) model fitted by `python -m regsosek_tools.calibration` (see its docstring)
# on the survey named under fit.survey: least squares of log monthly per-capita consumption.
# NOT illustrative: the numbers are estimates from that survey, as good as the survey is.
# Use it with REGSOSEK_PMT_MODEL_FILE=<this file>, then `python -m classify.replay`.
"""


def write_model(f: Fit, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(HEADER + yaml.safe_dump(f.document(), sort_keys=False, allow_unicode=True, width=120))


def main(argv: list[str] | None = None) -> int:
    settings = ClassifySettings()
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.calibration", description=__doc__.split("\n\n")[0])
    p.add_argument("--survey", type=Path, required=True, help="survey CSV (see the module docstring for columns)")
    p.add_argument("--out", type=Path, required=True, help="model file to write")
    p.add_argument("--regency-effects", action="store_true", help="fit one level per regency")
    p.add_argument("--min-regency-rows", type=int, default=30,
                   help="rows a regency needs for an effect of its own (default %(default)s)")
    p.add_argument("--select", choices=SELECTIONS, default="none", help="backward elimination (default %(default)s)")
    p.add_argument("--alpha", type=float, default=0.05, help="p-value threshold for --select pvalue")
    p.add_argument("--version", help="model version (default pmt-calibrated-<survey sha256 prefix>)")
    p.add_argument("--poverty-lines", type=Path, default=settings.poverty_lines_file,
                   help="poverty lines for the report (default: the configured file)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")  # progress off a terminal
    try:
        survey = read_survey(a.survey)
    except (OSError, SurveyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = fit(survey, PovertyLines.load(a.poverty_lines), regency_effects=a.regency_effects, selection=a.select,
                 alpha=a.alpha, min_regency_rows=a.min_regency_rows, version=a.version)
    write_model(result, a.out)
    print(result.report())
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
