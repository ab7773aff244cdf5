"""What replay decides before classifying a family: its rank value, the same as a full classification's."""

import pytest

from classify.app import load_config
from classify.ranking import reference_placement
from classify.reclassify import value_of
from classify.settings import ClassifySettings
from regsosek.contracts import WelfareGroup, household_profile
from regsosek_tools.sample import generate

CONFIG = load_config(ClassifySettings())
PLACEMENT = reference_placement(CONFIG.model.version, CONFIG.model.decile_cutpoints)


@pytest.mark.parametrize("group", [None, *WelfareGroup])
def test_the_rank_value_replay_compares_is_the_classifications(group):
    for iv in generate(7, 120).interviews:
        p = household_profile(iv)
        assert value_of(CONFIG, p, group) == CONFIG.classify(p, group, PLACEMENT).rank_value, p.family_id
