"""The dispatcher: claims, dead owners, deadlines, the step boundary, the in-flight cap."""

import os
import subprocess
import sys
import threading
import time

import psutil
import pytest

from image2model import create_app, processes
from image2model.pipeline import claims, lifecycle, slots
from image2model.pipeline.dispatcher import DEAD_OWNER_CHECK_EVERY
from image2model.store import db, jobs
from tests import images
from tests.conftest import USER_KEY, bearer
from tests.helpers import (
    end_as_failed,
    generation_rows,
    held_step,
    poll_later,
    replace_step,
    set_columns,
)
from tests.live_server import wait_until


def test_a_live_claim_of_another_owner_is_respected(app, client):
    images.uploaded(client, [("a.png", images.png())])
    set_columns(app, claimed_by="elsewhere:1:1", lease_until=time.time() + 60)
    lifecycle.get_dispatcher(app).run_due()
    assert generation_rows(app)[0]["state"] == "queued"


def test_an_expired_claim_is_taken_over(app, client):
    images.uploaded(client, [("a.png", images.png())])
    set_columns(app, claimed_by="elsewhere:1:1", lease_until=time.time() - 1)
    lifecycle.get_dispatcher(app).run_due()
    row = generation_rows(app)[0]
    assert row["state"] == "completed" and row["claimed_by"] is None


def test_claims_of_dead_processes_on_this_host_are_released(app, client):
    images.uploaded(client, [("a.png", images.png())])
    dead_owner = f"{processes.worker_identity().rsplit(':', 2)[0]}:999999:1.000"
    set_columns(app, claimed_by=dead_owner, lease_until=time.time() + 3600)
    dispatcher = lifecycle.get_dispatcher(app)
    dispatcher.start()  # inline mode: releases them and returns
    assert generation_rows(app)[0]["claimed_by"] is None
    assert not processes.owner_is_dead(dispatcher.identity)


def owner_of(process):
    """Return the claim owner string of another process of this host."""
    host = processes.worker_identity().split(":", 1)[0]
    return f"{host}:{process.pid}:{psutil.Process(process.pid).create_time():.3f}"


def test_a_zombie_owner_is_dead_and_a_running_one_is_not():
    # A SIGKILLed worker stays a zombie until its parent reaps it; the restarted server must not
    # wait out the lease for it.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        owner = owner_of(child)
        assert not processes.owner_is_dead(owner)
        child.kill()
        wait_until(
            lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 10, message="zombie"
        )
        assert processes.owner_is_dead(owner)
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdin.close()
    assert processes.owner_is_dead(owner)  # reaped: gone


def test_claims_of_an_owner_that_dies_later_are_released_by_a_pass(app, client, monkeypatch):
    images.uploaded(client, [("a.png", images.png())])
    dispatcher = lifecycle.get_dispatcher(app)
    dying = "dying-owner"
    monkeypatch.setattr(processes, "owner_is_dead", lambda owner: owner == dying)
    set_columns(app, claimed_by=dying, lease_until=time.time() + 3600)
    dispatcher._dead_checked_at = time.time() - DEAD_OWNER_CHECK_EVERY
    dispatcher.run_due()
    assert generation_rows(app)[0]["state"] == "completed"


def test_the_app_alone_starts_no_background_work(app_config):
    built = create_app({**app_config, "POOL_SIZE": 2, "RETENTION_INTERVAL": 60})
    try:
        dispatcher = lifecycle.get_dispatcher(built)
        assert dispatcher._thread is None
        assert built.extensions["image2model.retention"]._thread is None
        assert not [t for t in threading.enumerate() if t.name.startswith("image2model-")]
    finally:
        lifecycle.shutdown(built)


def test_overdue_generation_fails_with_timeout(app, client):
    body = images.uploaded(client, [("a.png", images.png())])
    set_columns(app, deadline_at=time.time() - 1)
    lifecycle.get_dispatcher(app).run_due()
    job = client.get(f"/api/v1/models/job/{body['job_id']}", headers=bearer(USER_KEY)).get_json()
    assert job["status"] == "failed"
    assert job["errors"][0]["code"] == "TIMEOUT"


def test_a_crashing_step_ends_failed_and_the_dispatcher_goes_on(app, client, monkeypatch):
    def explode(run):
        raise RuntimeError("boom with a secret")

    replace_step(monkeypatch, "relief", explode)
    body = images.uploaded(client, [("a.png", images.png())])
    lifecycle.get_dispatcher(app).run_due()
    row = generation_rows(app)[0]
    assert (row["state"], row["error_code"]) == ("failed", "PROCESSING_ERROR")
    assert "secret" not in row["error_message"]
    assert row["claimed_by"] is None
    monkeypatch.undo()
    second = images.uploaded(client, [("b.png", images.png())])
    lifecycle.get_dispatcher(app).run_due()
    states = {r["job_id"]: r["state"] for r in generation_rows(app)}
    assert states == {body["job_id"]: "failed", second["job_id"]: "completed"}


def test_terminal_state_is_final(app, client):
    images.uploaded(client, [("a.png", images.png())])
    lifecycle.get_dispatcher(app).run_due()
    row = generation_rows(app)[0]
    conn = db.connect(db.database_path(app))
    try:
        assert not jobs.transition(conn, row["id"], "processing", progress=50)
    finally:
        conn.close()
    assert generation_rows(app)[0]["state"] == "completed"


def test_timestamps_record_first_entry_of_each_state(app, client):
    images.uploaded(client, [("a.png", images.png())])
    lifecycle.get_dispatcher(app).run_due()
    row = generation_rows(app)[0]
    assert row["created_at"] <= row["started_at"] <= row["finished_at"]
    assert row["progress"] == 100


@pytest.fixture
def app_config(app_config):
    """Allow tripo3d (never run here) so the FAL cap can be observed."""
    return {
        **app_config,
        "FAL_KEY": "dummy-key-never-used",
        "MAX_FAL_IN_FLIGHT": 2,
        "DEFAULT_MODEL": "relief",
    }


def test_fal_submissions_beyond_the_cap_wait(app, client, monkeypatch):

    started = []
    replace_step(monkeypatch, "tripo3d", lambda run: started.append(run.id))
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(4)], model_type="tripo3d")
    set_columns(app, state="submitted")
    conn = db.connect(db.database_path(app))
    try:
        with db.transaction(conn):
            conn.execute("UPDATE generations SET state = 'queued' WHERE id > 2")
    finally:
        conn.close()
    lifecycle.get_dispatcher(app).run_due()
    assert sorted(started) == [1, 2]  # the two in flight are polled; the queued two wait


def test_leases_of_this_process_are_renewed(app, client):
    images.uploaded(client, [("a.png", images.png())])
    dispatcher = lifecycle.get_dispatcher(app)
    set_columns(app, claimed_by=dispatcher.identity, lease_until=time.time() + 1)
    dispatcher.run_due()
    assert generation_rows(app)[0]["lease_until"] > time.time() + claims.LEASE_SECONDS - 60


def test_a_step_whose_claim_was_lost_does_nothing(app, client):
    images.uploaded(client, [("a.png", images.png())])
    set_columns(app, claimed_by="elsewhere:1:1", lease_until=time.time() + 60)
    lifecycle.get_dispatcher(app).run_step(generation_rows(app)[0]["id"])
    row = generation_rows(app)[0]
    assert (row["state"], row["claimed_by"]) == ("queued", "elsewhere:1:1")


def test_a_lost_submit_answer_is_not_retried():
    from image2model.generators import tripo3d

    retry, message = tripo3d.classify(tripo3d.MaybeSubmitted("ReadTimeout"))
    assert retry is False and "twice" in message


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        ("ReadTimeout", True),
        ("TooManyRedirects", False),
        ("DecodingError", False),
        ("InvalidURL", False),
    ],
)
def test_fal_and_download_errors_are_classified_never_left_as_internal(error, retried):
    import httpx

    from image2model.generators import tripo3d

    outcome = tripo3d.classify(getattr(httpx, error)("from a test"))
    assert outcome is not None and outcome[0] is retried


def test_pool_shares_a_running_call_by_key():
    import threading

    from image2model.pool import WorkerPool

    pool = WorkerPool(2)
    started, release, starts = threading.Event(), threading.Event(), []

    def slow():
        starts.append(1)
        started.set()
        release.wait(5)
        return "done"

    try:
        with pytest.raises(TimeoutError):
            pool.call(slow, timeout=0.05, share_key="k")  # gives up; the call goes on
        assert started.wait(5)
        with pytest.raises(TimeoutError):
            pool.call(slow, timeout=0.05, share_key="k")  # joins the running call
        assert starts == [1]
        release.set()
    finally:
        release.set()
        pool.shutdown()


def test_an_ending_step_wakes_the_dispatcher_only_when_queued_fal_work_waits_for_the_cap(
    app, client, monkeypatch
):
    runs = held_step(monkeypatch, [end_as_failed] * 4)
    dispatcher = lifecycle.get_dispatcher(app)
    wakes = []
    monkeypatch.setattr(dispatcher, "wake", lambda: wakes.append(True))
    images.uploaded(client, [("a.png", images.png())], model_type="tripo3d")
    wakes.clear()
    dispatcher.run_due()  # one request of the two allowed in flight
    assert len(runs) == 1 and wakes == []
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(3)], model_type="tripo3d")
    wakes.clear()
    dispatcher.run_due()  # two claimed, the cap reached: each ending lets the third start
    assert len(runs) == 3 and len(wakes) == 2
    states = [(row["state"], row["claimed_by"]) for row in generation_rows(app)]
    assert states == [("failed", None)] * 3 + [("queued", None)]


def test_a_step_ending_during_a_dispatcher_pass_wakes_it(app, client, monkeypatch):
    runs = held_step(monkeypatch, [poll_later, end_as_failed, poll_later])
    dispatcher = lifecycle.get_dispatcher(app)
    images.uploaded(client, [("a.png", images.png())], model_type="tripo3d")
    dispatcher.run_due()  # the first request is in flight, polled later
    first = generation_rows(app)[0]["id"]
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(2)], model_type="tripo3d")
    take = claims.take

    def take_after_the_first_ends(conn, owner, generation_ids, now):
        # A pool thread ends the first request after this pass counted it in flight.
        dispatcher.run_step(first)
        return take(conn, owner, generation_ids, now)

    monkeypatch.setattr(claims, "take", take_after_the_first_ends)
    wakes = []
    monkeypatch.setattr(dispatcher, "wake", lambda: wakes.append(True))
    dispatcher.run_due_in_database()  # takes the second; the cap (two) looks reached
    assert len(runs) == 2 and wakes == [True]  # the next pass finds the third a place


def test_a_poll_that_changes_nothing_keeps_its_claim_until_the_generation_ends(
    app, client, monkeypatch
):
    def finish(run):
        run.transition("failed", error_code="FAL_API_ERROR", error_message="ended")

    runs = held_step(monkeypatch, [poll_later, poll_later, finish])
    images.uploaded(client, [("a.png", images.png())], model_type="tripo3d")
    dispatcher = lifecycle.get_dispatcher(app)
    dispatcher.run_due()
    assert generation_rows(app)[0]["claimed_by"] == dispatcher.identity
    assert len(dispatcher.held) == 1 and dispatcher.held.next_due_at() > time.time() + 3000
    for expected_runs in (2, 3):
        due_at, generation_id = dispatcher.held.pop_next_due(float("inf"))
        dispatcher.run_step(generation_id, due_at)
        assert len(runs) == expected_runs
    row = generation_rows(app)[0]
    assert (row["state"], row["claimed_by"], len(dispatcher.held)) == ("failed", None, 0)


def test_a_held_generation_past_its_deadline_fails_and_gives_up_its_claim(app, client, monkeypatch):
    runs = held_step(monkeypatch, [poll_later])
    images.uploaded(client, [("a.png", images.png())], model_type="tripo3d")
    dispatcher = lifecycle.get_dispatcher(app)
    dispatcher.run_due()
    set_columns(app, deadline_at=time.time() - 1)
    dispatcher.run_due()
    row = generation_rows(app)[0]
    assert (row["state"], row["error_code"]) == ("failed", "TIMEOUT")
    assert row["claimed_by"] == dispatcher.identity  # held: the step's turn has not come
    due_at, generation_id = dispatcher.held.pop_next_due(float("inf"))
    assert dispatcher.held.pop_next_due(float("inf")) is None
    dispatcher.run_step(generation_id, due_at)
    assert generation_rows(app)[0]["claimed_by"] is None and runs == [generation_id]


def test_a_step_that_writes_fields_releases_its_claim_with_them(app, client, monkeypatch):
    held_step(monkeypatch, [lambda run: run.run_again_in(60, attempts=3)])
    images.uploaded(client, [("a.png", images.png())], model_type="tripo3d")
    dispatcher = lifecycle.get_dispatcher(app)
    dispatcher.run_due()
    row = generation_rows(app)[0]
    assert (row["claimed_by"], row["attempts"], len(dispatcher.held)) == (None, 3, 0)
    assert row["next_run_at"] > time.time() + 50


def test_stopping_hands_back_held_claims(app, client, monkeypatch):
    held_step(monkeypatch, [poll_later])
    images.uploaded(client, [("a.png", images.png())], model_type="tripo3d")
    dispatcher = lifecycle.get_dispatcher(app)
    dispatcher.run_due()
    dispatcher.stop()
    assert generation_rows(app)[0]["claimed_by"] is None and len(dispatcher.held) == 0


@pytest.mark.parametrize(
    ("late_by", "expected_from"),
    [(0.02, "due"), (0.5, "began")],
    ids=["on time: the rate is kept", "an interval late: no catching up"],
)
def test_the_next_poll_is_timed_from_when_this_one_was_due(app, late_by, expected_from):
    from image2model.pipeline.runs import GenerationRun

    due_at = time.time() - late_by
    run = GenerationRun(
        app, None, {"id": 1, "state": "processing", "options": "{}", "next_run_at": 0.0}, due_at
    )
    run.poll_again(0.1)
    base = due_at if expected_from == "due" else run.began
    assert run.release_fields["next_run_at"] == pytest.approx(base + 0.1)
    assert run.keep_claim is True


def event_types(app):
    """Return the types of every event recorded, oldest first."""
    return [row["type"] for row in images.query(app, "SELECT type FROM events ORDER BY id")]


def test_log_lines_alone_add_log_events_but_no_repeated_progress_event(app, client):
    from image2model.pipeline.runs import GenerationRun

    images.uploaded(client, [("a.png", images.png())])
    conn = db.connect(db.database_path(app))
    try:
        row = conn.execute(
            "SELECT g.*, j.options FROM generations g JOIN jobs j USING (job_id)"
        ).fetchone()
        before = event_types(app)
        assert GenerationRun(app, conn, row).transition(
            "queued", log_lines=["Downloading input image"], fal_logs_seen=1
        )
        assert event_types(app) == [*before, "log"]
        assert GenerationRun(app, conn, row).transition(
            "queued", progress=20, log_lines=["Generating mesh 20%"], fal_logs_seen=2
        )
        assert event_types(app) == [*before, "log", "log", "progress"]
    finally:
        conn.close()
    assert generation_rows(app)[0]["fal_logs_seen"] == 2


@pytest.mark.parametrize("query", ["IN_FLIGHT_COUNT", "DUE_UNCLAIMED", "NEXT_DUE", "OVERDUE"])
def test_a_dispatcher_pass_reads_unfinished_generations_through_their_index(app, query):
    sql = getattr(jobs, query)
    conn = db.connect(db.database_path(app))
    try:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [0] * sql.count("?"))]
    finally:
        conn.close()
    assert not any(step.startswith("SCAN g") for step in plan), plan
    assert any("generations_by_state" in step for step in plan), plan


def with_local_slots(dispatcher, monkeypatch, count):
    """Give the dispatcher `count` local slots and a pool that only keeps what it is handed;
    return the slots and that list of `(fn, args)`."""
    local = slots.Slots(count)
    monkeypatch.setattr(dispatcher, "local_slots", local)
    started = []  # steps handed to the pool, not yet run
    monkeypatch.setattr(dispatcher.pool, "submit", lambda fn, *args: started.append((fn, args)))
    return local, started


def test_local_steps_run_no_more_at_once_than_their_slots(app, client, monkeypatch):
    dispatcher = lifecycle.get_dispatcher(app)
    _slots, started = with_local_slots(dispatcher, monkeypatch, 2)
    wakes = []
    monkeypatch.setattr(dispatcher, "wake", lambda: wakes.append(True))
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(5)], model_type="relief")

    wait = dispatcher.run_due_in_database()
    assert len(started) == 2
    claimed = [row["claimed_by"] is not None for row in generation_rows(app)]
    assert claimed == [True, True, False, False, False]  # the others stay free for any process
    assert wait > 1  # the waiting three are woken by an ending step, not polled for

    fn, args = started.pop(0)
    wakes.clear()
    fn(*args)  # the first build ends and frees its slot
    assert wakes == [True]
    dispatcher.run_due_in_database()
    assert len(started) == 2  # the second still runs; the third took the freed slot
    states = [row["state"] for row in generation_rows(app)]
    assert states == ["completed", "queued", "queued", "queued", "queued"]


def test_without_threads_local_steps_are_not_limited(app, client):
    assert lifecycle.get_dispatcher(app).local_slots is None
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(3)], model_type="relief")
    lifecycle.get_dispatcher(app).run_due()
    assert [row["state"] for row in generation_rows(app)] == ["completed"] * 3


def test_slots_meant_for_rows_another_process_took_are_filled_at_once(app, client, monkeypatch):
    dispatcher = lifecycle.get_dispatcher(app)
    local, started = with_local_slots(dispatcher, monkeypatch, 2)
    images.uploaded(client, [(f"{n}.png", images.png()) for n in range(3)], model_type="relief")
    take = claims.take
    # The second row is claimed by another process between this pass's read and its claims.
    monkeypatch.setattr(
        claims, "take", lambda conn, owner, ids, now: take(conn, owner, ids[:1], now)
    )
    wait = dispatcher.run_due_in_database()
    assert wait < 1 and not local.waited  # the third is due: the next pass gives it the slot
    monkeypatch.setattr(claims, "take", take)
    dispatcher.run_due_in_database()  # (the other process let go of the second meanwhile)
    assert [args[0] for _, args in started] == [1, 2]  # the slot went on to the next row at once


def test_a_local_step_ending_during_a_pass_wakes_the_dispatcher(app, client, monkeypatch):
    dispatcher = lifecycle.get_dispatcher(app)
    local, started = with_local_slots(dispatcher, monkeypatch, 1)
    images.uploaded(client, [("a.png", images.png())], model_type="relief")
    dispatcher.run_due_in_database()  # the one slot taken, nothing left waiting
    assert len(started) == 1 and not local.waited
    images.uploaded(client, [("b.png", images.png())], model_type="relief")
    take = claims.take

    def take_after_the_first_ends(conn, owner, generation_ids, now):
        fn, args = started.pop()
        fn(*args)  # a pool thread ends the first build after this pass found no free slot
        return take(conn, owner, generation_ids, now)

    monkeypatch.setattr(claims, "take", take_after_the_first_ends)
    wakes = []
    monkeypatch.setattr(dispatcher, "wake", lambda: wakes.append(True))
    dispatcher.run_due_in_database()
    assert wakes  # the next pass gives the second build the freed slot


@pytest.mark.parametrize(
    ("pool_size", "cores", "places"), [(8, 2, 2), (8, 1, 1), (8, 16, 7), (1, 4, 1), (2, 4, 1)]
)
def test_local_slots_are_the_cores_but_leave_the_pool_a_thread(
    monkeypatch, pool_size, cores, places
):
    monkeypatch.setattr(slots, "usable_cores", lambda: cores)
    assert slots.local_slots(pool_size).count == places


def test_the_keys_cli_leaves_queued_work_alone(app, client):
    # `flask keys list` while a job waits: the CLI builds the app with a real pool, which must
    # neither claim nor build the job's files.
    body = images.uploaded(client, [(f"{n}.png", images.png()) for n in range(3)])
    env = {
        **os.environ,
        "IMAGE2MODEL_INSTANCE_PATH": app.instance_path,
        "IMAGE2MODEL_POOL_SIZE": "4",
    }
    listed = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "image2model", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    rows = generation_rows(app)
    assert [row["job_id"] for row in rows] == [body["job_id"]] * 3
    assert all(row["state"] == "queued" and row["claimed_by"] is None for row in rows)


def test_the_worker_log_names_the_state_each_move_left(app, client, caplog):
    caplog.set_level("INFO", logger="image2model.pipeline.runs")
    images.uploaded(client, [("a.png", images.png())])
    lifecycle.get_dispatcher(app).run_due()
    moves = [r.getMessage().split(": ", 1)[1] for r in caplog.records if " -> " in r.getMessage()]
    assert moves == ["queued -> processing", "processing -> completed"]
