"""Slots: a fixed number of FAL steps and of local steps at once; held steps wait for a place."""

import threading

import pytest

from image2model.pipeline import lifecycle
from image2model.pipeline.slots import Slots, fal_slots
from tests import images
from tests.conftest import with_config
from tests.helpers import generation_rows, held_step, poll_later
from tests.live_server import wait_until


def test_steps_begin_up_to_the_count_and_a_waiter_is_announced_once():
    slots = Slots(2)
    assert slots.try_begin() and slots.try_begin()
    assert not slots.try_begin() and slots.free() == 0
    assert slots.end() is True  # a step waited for this place
    assert slots.end() is False  # announced once
    assert slots.free() == 2 and slots.running == 0


@pytest.mark.parametrize(("pool_size", "places"), [(8, 7), (2, 1), (1, 1)])
def test_fal_steps_leave_the_pool_one_thread(pool_size, places):
    assert fal_slots(pool_size).count == places


@with_config(FAL_KEY="dummy-key-never-used")
def test_steps_held_back_by_the_limit_keep_their_claim_and_start_as_slots_free(
    app, client, monkeypatch
):
    runs = held_step(monkeypatch, [poll_later] * 3)
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(3)], model_type="tripo3d")
    dispatcher = lifecycle.get_dispatcher(app)
    dispatcher.fal_slots = Slots(1)
    assert dispatcher.fal_slots.try_begin()  # a step of another generation is running
    dispatcher.run_due()
    assert runs == [] and len(dispatcher.held) == 3
    assert {row["claimed_by"] for row in generation_rows(app)} == {dispatcher.identity}
    assert dispatcher.fal_slots.end() is True
    dispatcher.run_held()  # inline: each step ends before the next one is started
    assert sorted(runs) == [row["id"] for row in generation_rows(app)]
    assert dispatcher.fal_slots.running == 0


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
    dispatcher = lifecycle.get_dispatcher(app)
    dispatcher.fal_slots = Slots(1)
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(3)], model_type="tripo3d")
    wait_until(lambda: len(runs) == 1 and len(dispatcher.held) == 2, 10, message="two held back")
    assert dispatcher.fal_slots.running == 1
    gate.set()
    wait_until(
        lambda: all(row["state"] == "failed" for row in generation_rows(app)), 10, message="all end"
    )
    assert len(runs) == 3
    wait_until(lambda: dispatcher.fal_slots.running == 0, 10, message="every slot free again")


@with_config(POOL_SIZE=2)
def test_local_generator_steps_are_not_held_by_the_fal_slots(app, client):
    dispatcher = lifecycle.get_dispatcher(app)
    dispatcher.fal_slots = Slots(1)
    assert dispatcher.fal_slots.try_begin()  # the only slot is taken, and never freed
    images.uploaded(client, [("a.png", images.png())], model_type="relief")
    wait_until(
        lambda: generation_rows(app)[0]["state"] == "completed", 30, message="relief completed"
    )
    assert dispatcher.fal_slots.running == 1 and len(dispatcher.held) == 0


@with_config(FAL_KEY="dummy-key-never-used", POOL_SIZE=6)
def test_fal_steps_waiting_on_fal_run_in_every_slot_at_once(app, client, monkeypatch):
    gate = threading.Event()

    def finish_when_let_go(run):
        gate.wait(10)  # as a long upload does: the thread waits on FAL
        finish(run)

    runs = held_step(monkeypatch, [finish_when_let_go] * 6)
    dispatcher = lifecycle.get_dispatcher(app)
    assert dispatcher.fal_slots.count == 5
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(6)], model_type="tripo3d")
    try:
        wait_until(lambda: len(runs) == 5, 10, message="five steps running at once")
        assert dispatcher.fal_slots.running == 5 and len(dispatcher.held) == 1
    finally:
        gate.set()
    wait_until(
        lambda: all(row["state"] == "failed" for row in generation_rows(app)), 10, message="all end"
    )
