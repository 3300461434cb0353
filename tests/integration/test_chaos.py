"""Integration: kill -9 the real server once in every phase of a job, restart it at once.

A short run of tests/chaos.py (bench/chaos.py runs 20 rounds and prints figures): every job
answered 201 survives, every generation ends within the bound, each image is submitted to FAL
at most once (exactly once when its model was made), nothing partial or unowned is left in the
data folder, and work moves again soon after each restart.
"""

import pytest

from tests.chaos import PHASES, Chaos
from tests.fal_standin import FalStandIn

pytestmark = pytest.mark.integration

# Its rounds: after_2xx, upload (killed while its files are stored, before their rows are
# committed), polling, submit, download (a result file's download held).
SEED = 30
ROUNDS = len(PHASES)  # one of each, in an order the seed shuffles


def test_a_kill_in_every_phase_keeps_every_guarantee(tmp_path):
    with (
        FalStandIn(latency=1.0, queue_time=0.2) as fal,
        Chaos(tmp_path, fal, SEED, images=3, bound=45.0) as chaos,
    ):
        rounds = [
            chaos.run_round(number, phase) for number, phase in enumerate(chaos.phases(ROUNDS), 1)
        ]
    assert sorted(r.phase for r in rounds) == sorted(PHASES)
    for result in rounds:
        where = f"round {result.number}, {result.phase}: {result.moment}"
        assert result.problems == [], where
        assert result.settle < chaos.bound, where
        # Restarted as soon as no process ran: the port was free and the server came back.
        assert result.port_free and result.dead < 5, where
        assert result.recover is None or result.recover < 15, where
    assert sum(r.submits for r in rounds) <= sum(r.images for r in rounds)
