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

    def tick(self):
        """Move on by a little more than one window."""
        self.now += WINDOW * 1.1

    def __call__(self):
        return self.now


class FakeCpu:
    """A running step's thread CPU, moved by hand; calling it reads it."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self):
        return self.seconds


def run_window(limit, clock, steps, cpu_share):
    """Run `steps` steps inside one window whose CPU is `cpu_share` of its length."""
    start = clock.now
    for _ in range(steps):
        assert limit.try_start()
    for finishing in range(steps):
        # The last step closes the window; the others end inside it.
        clock.now = start + (2 * WINDOW if finishing == steps - 1 else WINDOW / 2)
        limit.finished(None, 2 * WINDOW * cpu_share / steps)


def grow(limit, clock, to):
    """Raise the limit to `to` through windows in which held-back steps found the GIL idle."""
    while limit.limit < to:
        while limit.try_start():
            pass  # every slot taken; the refusal marks work as held back
        clock.tick()
        for _ in range(limit.running):
            limit.finished(None, 0.0)
    assert limit.limit == to


def test_the_limit_starts_at_its_floor_and_never_halves_below_three():
    clock = FakeClock()
    limit = StepLimit(8, clock=clock)
    assert limit.limit == 3
    grow(limit, clock, 8)
    for _ in range(3):
        run_window(limit, clock, limit.limit, cpu_share=0.95)
    assert limit.limit == 3
    assert StepLimit(1).limit == 1  # a pool of one thread is never asked for more


def test_steps_start_up_to_the_limit_and_a_freed_slot_is_announced_once():
    limit = StepLimit(3, clock=FakeClock())
    assert [limit.try_start() for _ in range(4)] == [True, True, True, False]
    assert limit.finished(None) is True  # the step held back may start now
    assert limit.try_start() is True
    assert limit.finished(None) is False  # nothing is waiting any more


def test_a_saturated_gil_halves_the_limit_down_to_the_least():
    clock = FakeClock()
    limit = StepLimit(8, least=2, clock=clock)
    grow(limit, clock, 8)
    limits = []
    for _ in range(3):
        run_window(limit, clock, limit.limit, cpu_share=0.95)
        limits.append(limit.limit)
    assert limits == [4, 2, 2]


def test_the_limit_grows_back_only_while_steps_wait_and_the_gil_has_room():
    clock = FakeClock()
    limit = StepLimit(4, least=2, clock=clock)
    assert limit.limit == 2
    run_window(limit, clock, 2, cpu_share=0.1)  # idle, but nothing was held back
    assert limit.limit == 2
    for _ in range(2):
        assert limit.try_start()
    assert not limit.try_start()  # held back
    clock.now += 2 * WINDOW
    limit.finished(None, 0.001)
    limit.finished(None, 0.001)
    assert limit.limit == 3
    run_window(limit, clock, 3, cpu_share=0.95)
    assert limit.limit == 2


def test_running_steps_that_only_wait_raise_the_limit_before_any_ends():
    clock = FakeClock()
    limit = StepLimit(8, clock=clock)
    cpus = []
    while limit.try_start():
        cpus.append(FakeCpu())
        limit.begin(cpus[-1])
    assert len(cpus) == 3
    for _ in range(5):
        clock.tick()
        for cpu in cpus:
            cpu.seconds += 0.01 * WINDOW  # a long upload: the thread waits on the network
        assert limit.try_start()  # a new window with room: one more
        cpus.append(FakeCpu())
        limit.begin(cpus[-1])
        assert not limit.try_start()  # the rest stay held back until the next window
    assert limit.limit == 8 and limit.running == 8


def test_running_steps_that_load_the_gil_halve_the_limit_before_any_ends():
    clock = FakeClock()
    limit = StepLimit(8, clock=clock)
    grow(limit, clock, 8)
    cpus = [FakeCpu() for _ in range(8)]
    for cpu in cpus:
        assert limit.try_start()
        limit.begin(cpu)
    clock.tick()
    for cpu in cpus:
        cpu.seconds += WINDOW / 8  # together they held the GIL the whole window
    assert not limit.try_start()
    assert limit.limit == 4
    # Only the CPU since the last look counts: the GIL was idle since, and steps wait.
    clock.tick()
    assert limit.finished(cpus[0]) is False
    assert limit.limit == 5


def test_without_thread_clocks_a_long_step_counts_its_cpu_spread_over_its_run():
    clock = FakeClock()
    limit = StepLimit(8, clock=clock)
    grow(limit, clock, 8)
    assert limit.try_start()
    limit.begin(None)
    clock.tick()
    limit.finished(None, 0.09, 10.0)  # 90 ms of CPU over a 10 s download
    assert limit.limit == 8
    run_window(limit, clock, 8, cpu_share=0.95)  # short busy steps still halve it
    assert limit.limit == 4


def test_a_long_step_that_mostly_waited_does_not_read_as_a_busy_window():
    clock = FakeClock()
    limit = StepLimit(8, clock=clock)
    grow(limit, clock, 8)
    cpu = FakeCpu()
    assert limit.try_start()
    limit.begin(cpu)
    clock.now += 10.0
    cpu.seconds += 0.09  # 90 ms of CPU over a 10 s download
    limit.finished(cpu)
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
    assert dispatcher.limit.finished(None) is True
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


@with_config(FAL_KEY="dummy-key-never-used", POOL_SIZE=6)
def test_steps_waiting_on_fal_let_the_limit_grow_to_the_pool_size(app, client, monkeypatch):
    gate = threading.Event()

    def finish_when_let_go(run):
        gate.wait(10)  # as a long upload does: the thread waits, its CPU does not move
        finish(run)

    runs = held_step(monkeypatch, [finish_when_let_go] * 6)
    dispatcher = worker.get_dispatcher(app)
    assert dispatcher.limit.limit == 3
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(6)], model_type="tripo3d")
    try:
        wait_until(lambda: len(runs) == 6, 10, message="all six steps running at once")
        assert dispatcher.limit.running == 6 and dispatcher.limit.limit == 6
    finally:
        gate.set()
    wait_until(
        lambda: all(row["state"] == "failed" for row in generation_rows(app)), 10, message="all end"
    )
