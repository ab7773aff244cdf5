"""Small-count suppression of progress figures."""

from __future__ import annotations

from verify.disclosure import covers_one_sls, progress_figures, suppress, suppress_breakdown

SLS = "64720100010001"


def cell(prefix=SLS, sls=1, **k) -> dict:
    base = {"prefix": prefix, "sls": sls, "sls_complete": 0, "expected": 30, "interviewed": 28, "verified": 26,
            "flagged": 2, "absent": 1, "outstanding": 1, "held": 0}
    return {**base, **k}


def test_small_flagged_and_absent_in_one_sls_are_withheld_with_what_gives_them_back():
    out = suppress(cell(), one_sls=True)
    assert out["flagged"] is None and out["verified"] is None  # verified = interviewed - flagged
    assert out["absent"] is None and out["outstanding"] is None
    assert out["interviewed"] == 28 and out["expected"] == 30
    assert out["suppressed"] == ["absent", "flagged", "outstanding", "verified"]


def test_zero_and_five_or_more_are_shown():
    out = suppress(cell(flagged=0, verified=28, absent=5), one_sls=True)
    assert (out["flagged"], out["verified"], out["absent"], out["outstanding"]) == (0, 28, 5, 1)
    assert out["suppressed"] == []


def test_small_counts_of_wide_areas_are_shown():
    assert suppress(cell(prefix="6472", sls=40), one_sls=False)["flagged"] == 2


def test_an_area_with_one_rostered_sls_counts_as_an_sls():
    assert covers_one_sls("6472010001", 1) and covers_one_sls(SLS, 7) and not covers_one_sls("6472010001", 2)


def test_totals_withhold_what_a_single_group_withheld():
    groups = [cell(flagged=1, verified=27), cell(prefix="64720100010002", flagged=6, verified=22, absent=0)]
    totals = cell(prefix="6472010001", sls=2, flagged=7, verified=49, absent=1, outstanding=2)
    t, g = suppress_breakdown(totals, groups)
    assert g[0]["flagged"] is None and g[1]["flagged"] == 6
    assert t["flagged"] is None and t["verified"] is None  # else 7 - 6 gives the hidden 1 back
    assert t["absent"] is None  # the first group withheld absent too (1)
    assert t["expected"] == 30 and t["suppressed"] == ["absent", "flagged", "outstanding", "verified"]


def test_totals_stay_when_two_groups_withheld_a_figure():
    groups = [cell(flagged=1, absent=0), cell(prefix="64720100010002", flagged=2, absent=0)]
    t, _ = suppress_breakdown(cell(prefix="6472010001", sls=2, flagged=3, absent=0), groups)
    assert t["flagged"] == 3 and t["suppressed"] == []


def test_progress_figures_add_the_groups_up_and_withhold_what_one_group_withheld():
    row = dict.fromkeys(("sls", "sls_complete", "expected", "interviewed", "verified", "flagged", "absent",
                         "outstanding", "non_response", "held"), 0)
    rows = [{**row, "grp": "64720100010001", "sls": 1, "expected": 10, "interviewed": 10, "verified": 8, "flagged": 2},
            {**row, "grp": "64720100010002", "sls": 1, "expected": 5, "interviewed": 5, "verified": 5}]
    totals, groups = progress_figures(rows, "6472010001", True)
    assert totals["expected"] == 15 and totals["interviewed"] == 15
    assert groups[0]["flagged"] is None and totals["flagged"] is None  # else totals minus group 2 gives it back
    alone, none = progress_figures(rows, "6472010001", False)
    assert none == [] and alone["flagged"] == 2  # two SLS: nobody singled out
