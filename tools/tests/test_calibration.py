"""Calibration: a survey generated from KNOWN coefficients (regsosek_tools.survey) is fitted
back by regsosek_tools.calibration; the coefficients come back within their standard errors and
the fit report's numbers agree with what the survey itself says."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from classify.domain import classify
from classify.model import DATA, FEATURE_NAMES, PmtModel, PovertyLines, RuleSet, features, is_urban
from regsosek.contracts import FamilyInterview, household_profile
from regsosek.examples import family_interview
from regsosek_tools import survey as survey_tool
from regsosek_tools.calibration import calibrate

TRUTH_FILE = DATA / "pmt-illustrative-2022.1.yaml"
TRUTH = PmtModel.load(TRUTH_FILE)
LINES = PovertyLines.load(DATA / "poverty-lines-2022.yaml")
RULES = RuleSet.load(DATA / "eligibility-2022.1.yaml")
NOISE = 0.3


def level(model: PmtModel, regency: str) -> float:
    """A regency's total level: what a survey identifies when regency effects absorb `urban`."""
    urban = model.coefficients.get("urban", 0.0) if is_urban(regency) else 0.0
    return model.intercept + model.regency_effects.get(regency, 0.0) + urban


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("survey") / "survey.csv"
    assert survey_tool.write(path, 11, 12000, TRUTH, NOISE) == 12000
    return path


@pytest.fixture(scope="module")
def noisy_survey(noisy) -> calibrate.Survey:
    return calibrate.read_survey(noisy)


@pytest.fixture(scope="module")
def noisy_fit(noisy_survey) -> calibrate.Fit:
    return calibrate.fit(noisy_survey, LINES, regency_effects=True)


def test_feature_names_are_what_features_computes():
    p = household_profile(FamilyInterview.model_validate(copy.deepcopy(family_interview())))
    assert list(features(p)) == list(FEATURE_NAMES)
    assert survey_tool.COLUMNS[2:-2] == FEATURE_NAMES


def test_survey_is_deterministic_and_follows_the_truth(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    survey_tool.write(a, 5, 300, TRUTH, 0.0)
    survey_tool.write(b, 5, 300, TRUTH, 0.0)
    assert a.read_bytes() == b.read_bytes()
    rows = list(csv.DictReader(a.read_text().splitlines()))
    assert len(rows) == 300 and list(rows[0]) == list(survey_tool.COLUMNS)
    for r in rows[:50]:  # without noise the consumption is the truth's prediction (rounded to the rupiah)
        feats = {k: float(r[k]) for k in FEATURE_NAMES}
        expected, _ = TRUTH.predict(feats, r["regency"])
        assert float(r["consumption_per_capita"]) == pytest.approx(expected, abs=0.5)
        assert r["family_id"].startswith(r["regency"])


def test_calibration_recovers_known_coefficients(noisy_fit):
    fit = noisy_fit
    # urban is a function of the regency: with regency effects it cannot be estimated apart from them
    assert fit.excluded == {"urban": "collinear with the intercept, regency effects and features before it"}
    assert set(fit.coefficients) == set(TRUTH.coefficients) - {"urban"}
    worst = 0.0
    for name, true in TRUTH.coefficients.items():
        if name == "urban":
            continue
        est, se = fit.coefficients[name], fit.standard_errors[name]
        assert 0 < se < 0.05, name
        assert abs(est - true) < 4.5 * se, f"{name}: {est:.4f} vs {true} (se {se:.4f})"
        assert abs(est - true) < 0.06, name
        worst = max(worst, abs(est - true) / se)
    assert worst > 0.5  # noise really is there: not every estimate can sit on the truth
    fitted = PmtModel(fit.version, False, fit.intercept, fit.coefficients, fit.regency_effects, fit.cutpoints)
    for regency in TRUTH.regency_effects:
        assert level(fitted, regency) == pytest.approx(level(TRUTH, regency), abs=0.05), regency
    # effects are centred: their row-weighted mean is zero
    regs = fit.survey.regency
    assert np.mean([fit.regency_effects[r] for r in regs]) == pytest.approx(0.0, abs=1e-9)


def test_fit_report_numbers_agree_with_the_survey(noisy_survey, noisy_fit):
    s, fit = noisy_survey, noisy_fit
    y = np.log(s.consumption)
    # R² is about 1 - noise variance / variance of log consumption, and the residual s.d. about the noise
    assert fit.r2 == pytest.approx(1 - NOISE**2 / y.var(), abs=0.02)
    assert fit.sigma == pytest.approx(NOISE, abs=0.01)
    assert 0 < fit.adj_r2 < fit.r2 < 1
    # the share under the poverty line is the survey's own
    lines = np.array([LINES.poverty_line(r) for r in s.regency])
    assert fit.poverty_line.share_targeted == pytest.approx(float((s.consumption < lines).mean()))
    assert fit.bottom_40.share_targeted == pytest.approx(0.40, abs=0.001)
    for t in (fit.poverty_line, fit.bottom_40):
        assert 0.02 < t.exclusion_error < 0.4
        assert 0.02 < t.inclusion_error < 0.4
    # with equal-sized target groups, what is missed equals what leaks
    assert fit.bottom_40.exclusion_error == pytest.approx(fit.bottom_40.inclusion_error, abs=0.002)
    # reference cut-points: deciles of the fitted model's predictions over the survey
    assert len(fit.cutpoints) == 9 and fit.cutpoints == sorted(fit.cutpoints)
    model = PmtModel(fit.version, False, fit.intercept, fit.coefficients, fit.regency_effects, fit.cutpoints)
    log_pred = fit.intercept + sum(c * s.features[k] for k, c in fit.coefficients.items())
    log_pred += np.array([fit.regency_effects[r] for r in s.regency])
    i = 123
    assert math.exp(log_pred[i]) == pytest.approx(
        model.predict({k: float(s.features[k][i]) for k in s.features}, s.regency[i])[0], rel=1e-12)
    shares = np.bincount([model.provisional_decile(p) for p in np.exp(log_pred)], minlength=11)[1:] / s.rows
    assert shares == pytest.approx([0.1] * 10, abs=0.002)
    text = fit.report()
    assert f"R² {fit.r2:.4f}" in text and "exclusion error" in text and "bottom 40%" in text


def test_without_noise_the_fit_is_exact(tmp_path):
    path = tmp_path / "exact.csv"
    survey_tool.write(path, 3, 3000, TRUTH, 0.0)
    fit = calibrate.fit(calibrate.read_survey(path), LINES, regency_effects=True)
    for name, true in TRUTH.coefficients.items():
        if name != "urban":
            assert fit.coefficients[name] == pytest.approx(true, abs=2e-4), name
    assert fit.r2 > 0.99999
    assert fit.poverty_line.exclusion_error < 0.005 and fit.poverty_line.inclusion_error < 0.005
    assert fit.bottom_40.exclusion_error < 0.005


def test_without_regency_effects_urban_is_estimated(noisy_survey):
    fit = calibrate.fit(noisy_survey, LINES)
    assert "urban" in fit.coefficients and fit.regency_effects == {}
    assert fit.excluded == {}
    assert fit.coefficients["urban"] > 0  # the urban regencies' higher levels go there


def _rewrite(src: Path, dst: Path, change) -> None:
    rows = list(csv.DictReader(src.read_text().splitlines()))
    out = [r2 for r in rows if (r2 := change(dict(r))) is not None]
    with dst.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(out[0]))
        w.writeheader()
        w.writerows(out)


def test_no_variance_missing_column_and_bad_rows(tmp_path):
    src = tmp_path / "s.csv"
    survey_tool.write(src, 4, 2000, TRUTH, NOISE)
    dst = tmp_path / "t.csv"

    def change(r):
        r["asset_boat"] = "0"  # nobody owns a boat
        del r["internet"]  # not asked
        if r["family_id"].endswith("-001") and r["regency"] == "6472":
            r["consumption_per_capita"] = "0"  # unusable
        return r

    _rewrite(src, dst, change)
    s = calibrate.read_survey(dst)
    assert s.dropped_rows > 0 and s.rows == 2000 - s.dropped_rows
    fit = calibrate.fit(s, LINES)
    assert fit.excluded == {"internet": "no column in the survey", "asset_boat": "no variance in the survey"}
    assert "asset_boat" not in fit.coefficients and "internet" not in fit.coefficients


def test_backward_elimination_drops_the_features_that_do_nothing(tmp_path):
    truth_doc = yaml.safe_load(TRUTH_FILE.read_text())
    nothing = ["asset_gold_10g", "head_female", "water_unprotected"]
    for k in nothing:
        truth_doc["coefficients"][k] = 0.0
    truth_file = tmp_path / "truth.yaml"
    truth_file.write_text(yaml.safe_dump(truth_doc))
    path = tmp_path / "s.csv"
    survey_tool.write(path, 8, 10000, PmtModel.load(truth_file), NOISE)
    s = calibrate.read_survey(path)
    for method in ("pvalue", "aic"):
        fit = calibrate.fit(s, LINES, regency_effects=True, selection=method, alpha=0.01)
        eliminated = {k for k, why in fit.excluded.items() if why.startswith("backward elimination")}
        assert set(nothing) <= eliminated, (method, fit.excluded)
        # anything else eliminated can only be a weak true effect, never a strong one
        weak = {k for k, v in TRUTH.coefficients.items() if abs(v) < 0.05}
        assert eliminated - set(nothing) <= weak, (method, fit.excluded)
        strong = set(TRUTH.coefficients) - weak - set(nothing) - {"urban"}
        assert strong <= set(fit.coefficients), method


def test_weights_count_like_repeated_rows(tmp_path):
    src = tmp_path / "s.csv"
    survey_tool.write(src, 6, 1500, TRUTH, NOISE)
    rows = list(csv.DictReader(src.read_text().splitlines()))
    doubled, weighted = tmp_path / "doubled.csv", tmp_path / "weighted.csv"
    heavy = {r["family_id"] for r in rows[::3]}
    for path, body in ((doubled, rows + [r for r in rows if r["family_id"] in heavy]),
                       (weighted, [dict(r, weight="2" if r["family_id"] in heavy else "1") for r in rows])):
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(body)
    # (every regency gets an effect in both: the row-count threshold would otherwise differ)
    a = calibrate.fit(calibrate.read_survey(doubled), LINES, regency_effects=True, min_regency_rows=1)
    b = calibrate.fit(calibrate.read_survey(weighted), LINES, regency_effects=True, min_regency_rows=1)
    for k in a.coefficients:
        assert b.coefficients[k] == pytest.approx(a.coefficients[k], abs=1e-9)
    assert b.r2 == pytest.approx(a.r2, abs=1e-9)
    assert b.bottom_40.exclusion_error == pytest.approx(a.bottom_40.exclusion_error, abs=1e-9)


def test_command_writes_a_usable_versioned_model(noisy, tmp_path, capsys):
    out = tmp_path / "model.yaml"
    assert calibrate.main(["--survey", str(noisy), "--out", str(out), "--regency-effects"]) == 0
    printed = capsys.readouterr().out
    assert "R² 0." in printed and "below the poverty line" in printed and "bottom 40%" in printed
    doc = yaml.safe_load(out.read_text())
    assert doc["illustrative"] is False
    assert doc["version"].startswith("pmt-calibrated-") and doc["version"] in printed
    assert doc["fit"]["survey"]["rows"] == 12000 and len(doc["fit"]["survey"]["sha256"]) == 64
    assert doc["fit"]["selection"]["excluded"] == {"urban": "collinear with the intercept, regency effects and "
                                                            "features before it"}
    assert 0 < doc["fit"]["report"]["bottom_40"]["exclusion_error"] < 0.4
    model = PmtModel.load(out)  # classify loads it as it is
    assert model.illustrative is False and model.version == doc["version"]
    p = household_profile(FamilyInterview.model_validate(copy.deepcopy(family_interview())))
    c = classify(p, model, LINES, RULES)
    truth_c = classify(p, TRUTH, LINES, RULES)
    assert math.log(c.predicted) == pytest.approx(math.log(truth_c.predicted), abs=0.1)
    # the same survey gives the same version; --version names it
    assert calibrate.main(["--survey", str(noisy), "--out", str(tmp_path / "v.yaml"), "--version", "pmt-x-1"]) == 0
    assert yaml.safe_load((tmp_path / "v.yaml").read_text())["version"] == "pmt-x-1"


def test_command_refuses_a_survey_without_consumption(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("regency,urban\n6472,1\n")
    assert calibrate.main(["--survey", str(bad), "--out", str(tmp_path / "m.yaml")]) == 2
    assert "consumption_per_capita" in capsys.readouterr().err
    assert not (tmp_path / "m.yaml").exists()
