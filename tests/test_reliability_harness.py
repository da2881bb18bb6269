"""Every row of `make reliability`, at the reduced scale: each figure must be at its goal."""

from __future__ import annotations

import os
import random

import pytest

from tools.reliability import REDUCED, Row, render
from tools.reliability.rows import ROWS


@pytest.mark.parametrize("name", list(ROWS))
def test_reliability_row_meets_every_goal_at_reduced_scale(name: str) -> None:
    seed = int(os.environ.get("USR_ES_TEST_SEED") or random.SystemRandom().randrange(2**32))
    print(f"seed={seed} (replay with USR_ES_TEST_SEED={seed})")
    row: Row = ROWS[name](REDUCED.__class__(**{**REDUCED.__dict__, "seed": seed}))
    print(render([row]))
    assert row.goals, "the row measured nothing"
    assert row.ok, render([row])
