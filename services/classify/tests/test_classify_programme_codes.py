"""The programme codes tokens and notify know (regsosek.programmes) are those of the rules files."""

from pathlib import Path

import yaml

from regsosek.programmes import PROGRAMME_CODES

DATA = Path(__file__).resolve().parents[1] / "src" / "classify" / "data"


def test_every_rules_file_decides_exactly_the_known_programmes():
    files = sorted(DATA.glob("eligibility-*.yaml"))
    assert files
    for f in files:
        assert set(yaml.safe_load(f.read_text())["programmes"]) == set(PROGRAMME_CODES), f.name
