"""The step limit: fewer steps at once while CPU-bound, and no held-back step forgotten."""

import threading

import pytest

from image2model import worker
from image2model.step_limit import WINDOW, StepLimit
from tests import images
from tests.live_server import wait_until


class Clocks:
    """A wall clock and a process CPU clock that tests move by hand."""

    def __init__(self):
        self.now = 0.0
        self.cpu = 0.0

    def spend(self, seconds, busy):
        """Let `seconds` pass with the process using `busy` of one core."""
        self.now += seconds
        self.cpu += seconds * busy


def limit_with(clocks, most=8, least=3):
    """Return a StepLimit on the given clocks."""
    return StepLimit(most, least, clock=lambda: clocks.now, cpu_clock=lambda: clocks.cpu)


def run_one_step(limit, clocks, busy):
    """Run one step through the limit over one window at `busy` CPU use."""
    assert limit.take(1) == 1
    clocks.spend(WINDOW, busy)
    return limit.finished()


def test_the_limit_halves_while_cpu_bound_down_to_its_least():
    clocks = Clocks()
    limit = limit_with(clocks)
    seen = []
    for _ in range(4):
        run_one_step(limit, clocks, busy=1.0)
        seen.append(limit.limit)
    assert seen == [4, 3, 3, 3]


def test_the_limit_grows_by_one_while_the_cpu_has_room_up_to_the_pool():
    clocks = Clocks()
    limit = limit_with(clocks, most=5)
    limit.limit = 3
    seen = []
    for _ in range(4):
        run_one_step(limit, clocks, busy=0.2)
        seen.append(limit.limit)
    assert seen == [4, 5, 5, 5]


def test_a_middling_load_keeps_the_limit():
    clocks = Clocks()
    limit = limit_with(clocks)
    limit.limit = 5
    run_one_step(limit, clocks, busy=0.75)
    assert limit.limit == 5


def test_steps_beyond_the_limit_are_held_back_and_a_free_slot_says_so():
    clocks = Clocks()
    limit = limit_with(clocks, most=2, least=2)
    assert limit.take(5) == 2 and limit.take(1) == 0
    assert limit.finished() is True  # held-back work may start in the freed slot
    assert limit.take(1) == 1
    assert limit.finished() is False  # nothing was held back since
    limit.untake(1)
    assert limit.running == 0


def test_a_limit_raised_by_a_finishing_step_frees_held_back_work():
    clocks = Clocks()
    limit = limit_with(clocks, most=4, least=1)
    limit.limit = 1
    assert limit.take(3) == 1
    clocks.spend(WINDOW, busy=0.1)
    assert limit.finished() is True and limit.limit == 2


@pytest.fixture
def app_config(app_config):
    """A threaded pool (the limit applies to it) and a FAL key tripo3d steps never use."""
    return {**app_config, "POOL_SIZE": 2, "FAL_KEY": "dummy-key-never-used"}


def test_the_dispatcher_starts_held_back_steps_as_slots_free(app, client, monkeypatch):
    from image2model.generators import tripo3d

    dispatcher = worker.get_dispatcher(app)
    dispatcher.limit = StepLimit(1, 1)
    release, running, ran, lock = threading.Event(), [], [], threading.Lock()
    most_at_once = []

    def step(run):
        with lock:
            running.append(run.id)
            most_at_once.append(len(running))
        release.wait(10)
        with lock:
            running.remove(run.id)
            ran.append(run.id)
        if ran.count(run.id) == 1:
            run.poll_again(0.0)  # once more, from the held timetable
        else:
            run.transition("failed", error_code="FAL_API_ERROR", error_message="test step")

    monkeypatch.setattr(tripo3d, "step", step)
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(4)], model_type="tripo3d")
    wait_until(lambda: running, 10, message="the first step")
    assert not ran
    release.set()
    wait_until(lambda: len(ran) == 8, 10, message="every held-back step, twice")
    assert max(most_at_once) == 1
