"""The step limit: fewer steps at once while their CPU saturates the GIL, more while they wait."""

import threading

from image2model import worker
from image2model.step_limit import WINDOW, StepLimit
from tests import images
from tests.conftest import with_config
from tests.live_server import wait_until
from tests.test_worker import generation_rows, held_step, poll_later


class FakeClock:
    """A monotonic clock moved by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def run_window(limit, clock, steps, cpu_share):
    """Run `steps` steps inside one window whose CPU is `cpu_share` of its length."""
    start = clock.now
    for _ in range(steps):
        assert limit.try_start()
    for finishing in range(steps):
        # The last step closes the window; the others end inside it.
        clock.now = start + (2 * WINDOW if finishing == steps - 1 else WINDOW / 2)
        limit.finished(2 * WINDOW * cpu_share / steps, clock.now - start)


def test_the_limit_starts_at_the_pool_size_and_never_halves_below_three():
    clock = FakeClock()
    limit = StepLimit(8, clock=clock)
    assert limit.limit == 8
    for _ in range(3):
        run_window(limit, clock, limit.limit, cpu_share=0.95)
    assert limit.limit == 3
    assert StepLimit(1).limit == 1  # a pool of one thread is never asked for more


def test_steps_start_up_to_the_limit_and_a_freed_slot_is_announced_once():
    limit = StepLimit(3, clock=FakeClock())
    assert [limit.try_start() for _ in range(4)] == [True, True, True, False]
    assert limit.finished(0.0, 0.01) is True  # the step held back may start now
    assert limit.try_start() is True
    assert limit.finished(0.0, 0.01) is False  # nothing is waiting any more


def test_a_saturated_gil_halves_the_limit_down_to_the_least():
    clock = FakeClock()
    limit = StepLimit(8, least=2, clock=clock)
    limits = []
    for _ in range(3):
        run_window(limit, clock, limit.limit, cpu_share=0.95)
        limits.append(limit.limit)
    assert limits == [4, 2, 2]


def test_the_limit_grows_back_only_while_steps_wait_and_the_gil_has_room():
    clock = FakeClock()
    limit = StepLimit(4, least=2, clock=clock)
    run_window(limit, clock, 4, cpu_share=0.95)
    run_window(limit, clock, 2, cpu_share=0.95)
    assert limit.limit == 2
    run_window(limit, clock, 2, cpu_share=0.1)  # idle, but nothing was held back
    assert limit.limit == 2
    for _ in range(2):
        assert limit.try_start()
    assert not limit.try_start()  # held back
    clock.now += 2 * WINDOW
    limit.finished(0.001, 2 * WINDOW)
    limit.finished(0.001, 2 * WINDOW)
    assert limit.limit == 3


def test_a_long_step_that_mostly_waited_does_not_read_as_a_busy_window():
    clock = FakeClock()
    limit = StepLimit(8, clock=clock)
    assert limit.try_start()
    clock.now += 2 * WINDOW
    limit.finished(0.09, 10.0)  # 90 ms of CPU over a 10 s download: 0.45 ms per window
    assert limit.limit == 8


@with_config(FAL_KEY="dummy-key-never-used")
def test_steps_held_back_by_the_limit_keep_their_claim_and_start_as_slots_free(
    app, client, monkeypatch
):
    runs = held_step(monkeypatch, [poll_later] * 3)
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(3)], model_type="tripo3d")
    dispatcher = worker.get_dispatcher(app)
    dispatcher.limit = StepLimit(1)
    assert dispatcher.limit.try_start()  # a step of another generation is running
    dispatcher.run_due()
    assert runs == [] and len(dispatcher.held) == 3
    assert {row["claimed_by"] for row in generation_rows(app)} == {dispatcher.identity}
    assert dispatcher.limit.finished(0.0, 0.01) is True
    dispatcher.run_held()  # inline: each step ends before the next one is started
    assert sorted(runs) == [row["id"] for row in generation_rows(app)]
    assert dispatcher.limit.running == 0


def finish(run):
    """End the generation."""
    run.transition("failed", error_code="FAL_API_ERROR", error_message="ended")


@with_config(FAL_KEY="dummy-key-never-used", POOL_SIZE=2)
def test_a_step_finishing_on_the_pool_starts_the_one_held_back(app, client, monkeypatch):
    gate = threading.Event()

    def finish_when_let_go(run):
        gate.wait(10)
        finish(run)

    runs = held_step(monkeypatch, [finish_when_let_go, finish, finish])
    dispatcher = worker.get_dispatcher(app)
    dispatcher.limit = StepLimit(1)
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(3)], model_type="tripo3d")
    wait_until(lambda: len(runs) == 1 and len(dispatcher.held) == 2, 10, message="two held back")
    assert dispatcher.limit.running == 1
    gate.set()
    wait_until(
        lambda: all(row["state"] == "failed" for row in generation_rows(app)), 10, message="all end"
    )
    assert len(runs) == 3
    wait_until(lambda: dispatcher.limit.running == 0, 10, message="every slot given back")


@with_config(POOL_SIZE=2)
def test_local_generator_steps_are_not_held_by_the_step_limit(app, client):
    dispatcher = worker.get_dispatcher(app)
    dispatcher.limit = StepLimit(1)
    assert dispatcher.limit.try_start()  # the only slot is taken, and never given back
    images.uploaded(client, [("a.png", images.png())], model_type="relief")
    wait_until(
        lambda: generation_rows(app)[0]["state"] == "completed", 30, message="relief completed"
    )
    assert dispatcher.limit.running == 1 and len(dispatcher.held) == 0
