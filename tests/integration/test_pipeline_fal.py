"""Integration: the real server and the FAL stand-in, through the real fal-client."""

import os
import threading
import time

import pytest
import requests
import trimesh

from tests.fal_standin import FalStandIn
from tests.live_server import wait_until
from tests.pipeline_helpers import OTHER_KEY, Client, fal_server, png_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def fal():
    """A FAL stand-in with short latency."""
    with FalStandIn(latency=0.6, queue_time=0.2) as standin:
        yield standin


@pytest.fixture
def server(tmp_path, fal):
    """The real server pointed at the stand-in."""
    live = fal_server(tmp_path, fal).start()
    yield live
    live.stop()


def test_three_images_to_completion_with_progress_and_sse(server, fal):
    client = Client(server)
    images = [(f"chair-{n}.png", png_bytes(n)) for n in range(3)]
    upload = client.upload(images, face_limit="5000", model_type="tripo3d")
    assert upload["total_files"] == 3 and upload["face_limit"] == 5000

    streamed = {}
    reader = threading.Thread(
        target=lambda: streamed.update(
            zip(("events", "lines"), client.stream(upload["task_id"], timeout=60), strict=True)
        )
    )
    reader.start()
    job = client.wait_job(upload["job_id"])
    reader.join(timeout=60)

    assert job["status"] == "completed" and job["progress"] == 100
    assert job["completed_files"] == 3 and job["model_url"].startswith(
        f"/api/v1/download/{upload['job_id']}/chair-"
    )
    assert fal.submit_count == 3
    for submit in fal.submits:
        assert submit["arguments"]["face_limit"] == 5000
        assert submit["arguments"]["texture"] == "standard"
        assert submit["arguments"]["image_url"].startswith(fal.base_url)  # storage upload
    assert len(fal.uploads) == 3

    results = server.instance_path / "results" / upload["job_id"]
    assert sorted(os.listdir(results)) == sorted(
        [f"chair-{n}.glb" for n in range(3)] + [f"chair-{n}.preview.webp" for n in range(3)]
    )
    assert len(trimesh.load(results / "chair-0.glb", file_type="glb").geometry) >= 1

    progress = client.progress(upload["job_id"])
    assert progress["overall_progress"] == 100 and progress["completed_files"] == 3
    assert {entry["filename"] for entry in progress["files"].values()} == {
        name for name, _ in images
    }

    events = streamed["events"]
    assert events[-1][1]["type"] == "completed" and events[-1][1]["result"] == "success"
    ids = [event_id for event_id, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {payload["type"] for _, payload in events} >= {"progress", "log", "completed"}
    assert all(payload["task_id"] == upload["task_id"] for _, payload in events)
    per_file = {}
    for _, payload in events:
        for file_id, entry in payload.get("files", {}).items():
            assert entry["progress"] >= per_file.get(file_id, 0)  # monotonic
            per_file[file_id] = entry["progress"]
    assert any("Generating mesh" in p.get("message", "") for _, p in events if p["type"] == "log")
    assert streamed["lines"][0].startswith("retry: ")

    replay, _ = client.stream(upload["task_id"], last_event_id=ids[-3])
    assert [event_id for event_id, _ in replay] == ids[-2:]


def test_other_key_sees_nothing(server, fal):
    upload = Client(server).upload([("a.png", png_bytes(1))], model_type="tripo3d")
    other = Client(server, OTHER_KEY)
    for path in (
        f"/api/v1/models/job/{upload['job_id']}",
        f"/api/v1/status/jobs/{upload['job_id']}/progress",
        f"/api/v1/status/tasks/{upload['task_id']}/status",
        f"/api/v1/status/tasks/{upload['task_id']}/stream",
        f"/api/v1/upload/batch/{upload['batch_id']}/status",
        f"/api/v1/upload/status/{upload['uploaded_files'][0]['file_id']}",
    ):
        response = other.get(path)
        assert response.status_code == 404, path
        assert response.json()["detail"]["code"] == "NOT_FOUND"


def failed_job(server, fal, images=1, **fields):
    """Upload images and wait for the job to end; return the job JSON."""
    client = Client(server)
    upload = client.upload(
        [(f"img-{n}.png", png_bytes(n)) for n in range(images)], model_type="tripo3d", **fields
    )
    return upload, client.wait_job(upload["job_id"], timeout=45)


def test_transient_submit_errors_are_retried(server, fal):
    fal.fail_next("submit", 500, times=2)
    _, job = failed_job(server, fal)
    assert job["status"] == "completed"
    assert fal.submit_count == 1


def test_status_429_and_5xx_are_retried(server, fal):
    fal.fail_next("status", 429, times=2)
    fal.fail_next("status", 500, times=1)
    _, job = failed_job(server, fal)
    assert job["status"] == "completed"


def test_persistent_5xx_fails_after_bounded_retries(server, fal):
    fal.fail_next("status", 500, times=1000)
    _, job = failed_job(server, fal)
    assert job["status"] == "failed"
    assert job["errors"][0]["code"] == "FAL_API_ERROR"
    assert "attempts" in job["errors"][0]["message"]
    assert fal.submit_count == 1


def test_model_error_fails_with_fals_message(server, fal):
    fal.result_mode = "model_error"
    _, job = failed_job(server, fal)
    assert job["status"] == "failed"
    assert job["errors"][0]["code"] == "FAL_API_ERROR"
    assert job["errors"][0]["message"]


def test_submit_422_fails_without_retry(server, fal):
    fal.fail_next(
        "submit",
        422,
        body={"detail": [{"loc": ["body", "image_url"], "msg": "cannot read image", "type": "x"}]},
    )
    _, job = failed_job(server, fal)
    assert job["status"] == "failed"
    assert "image_url: cannot read image" in job["errors"][0]["message"]
    assert len([c for c in fal.calls if c["stage"] == "submit"]) == 1


@pytest.mark.parametrize("mode", ["missing_mesh", "bad_glb"])
def test_unusable_result_fails(server, fal, mode):
    fal.result_mode = mode
    upload, job = failed_job(server, fal)
    assert job["status"] == "failed" and job["errors"][0]["code"] == "FAL_API_ERROR"
    results = server.instance_path / "results" / upload["job_id"]
    assert not results.exists() or not [n for n in os.listdir(results) if n.endswith(".glb")]


def test_one_failure_does_not_touch_the_others(server, fal):
    fal.fail_next("submit", 422, times=1)
    _, job = failed_job(server, fal, images=3)
    assert job["status"] == "completed"
    assert job["completed_files"] == 2 and job["failed_files"] == 1


def test_bad_fal_key_fails_without_retry(tmp_path, fal):
    live = fal_server(tmp_path, fal)
    live.extra_env["FAL_KEY"] = "wrong-key"
    live.start()
    try:
        _, job = failed_job(live, fal)
    finally:
        live.stop()
    assert job["status"] == "failed"
    assert "credentials" in job["errors"][0]["message"]
    assert "wrong-key" not in live.log()
    assert len([c for c in fal.calls if c["stage"] in ("submit", "token")]) == 1


def test_hanging_status_times_out(tmp_path, fal):
    live = fal_server(tmp_path, fal, JOB_TIMEOUT=3).start()
    fal.hang("status", 20)
    try:
        _, job = failed_job(live, fal)
        assert job["status"] == "failed" and job["errors"][0]["code"] == "TIMEOUT"
        # The request we gave up on is cancelled at FAL (best effort; it refuses once running).
        (submitted,) = fal.submits
        fal.wait_for(lambda: [c for c in fal.cancels if c["request_id"] == submitted["request_id"]])
    finally:
        fal.hang("status", 0)
        live.stop()


def test_inline_upload_mode_sends_a_data_uri(tmp_path, fal):
    live = fal_server(tmp_path, fal, FAL_UPLOAD="inline").start()
    try:
        _, job = failed_job(live, fal)
    finally:
        live.stop()
    assert job["status"] == "completed"
    assert fal.submits[0]["arguments"]["image_url"].startswith("data:image/png;base64,")
    assert fal.uploads == []


def test_crash_after_submit_resumes_without_paying_twice(tmp_path, fal):
    fal.latency = 4.0
    live = fal_server(tmp_path, fal).start()
    client = Client(live)
    upload = client.upload([(f"c{n}.png", png_bytes(n)) for n in range(3)], model_type="tripo3d")
    fal.wait_for(lambda: fal.submit_count == 3, timeout=20)
    wait_until(
        lambda: all(
            f["status"] in ("submitted", "processing")
            for f in client.progress(upload["job_id"])["files"].values()
        ),
        10,
        message="all three submissions stored",
    )
    live.kill()
    assert not live.group_alive()

    restarted = fal_server(tmp_path, fal).start()
    try:
        job = Client(restarted).wait_job(upload["job_id"], timeout=45)
    finally:
        restarted.stop()
    assert job["status"] == "completed" and job["completed_files"] == 3
    assert fal.submit_count == 3  # re-attached by request id, never submitted again


def test_crash_between_submit_and_its_answer_is_never_submitted_again(tmp_path, fal):
    fal.hang("submit", 30)  # FAL has the request; its answer never reaches the server
    live = fal_server(tmp_path, fal).start()
    upload = Client(live).upload([("held.png", png_bytes(1))], model_type="tripo3d")
    fal.wait_for(lambda: fal.submit_count == 1, timeout=20)
    live.kill()
    fal.clear_faults()

    restarted = fal_server(tmp_path, fal).start()
    try:
        job = Client(restarted).wait_job(upload["job_id"], timeout=30)
    finally:
        restarted.stop()
    assert job["status"] == "failed" and job["progress"] == 100
    assert job["errors"][0]["code"] == "FAL_API_ERROR"
    assert "never paid for twice" in job["errors"][0]["message"]
    assert fal.submit_count == 1


def test_sigterm_leaves_jobs_resumable(tmp_path, fal):
    fal.latency = 3.0
    live = fal_server(tmp_path, fal).start()
    client = Client(live)
    upload = client.upload([(f"t{n}.png", png_bytes(n)) for n in range(2)], model_type="tripo3d")
    fal.wait_for(lambda: fal.submit_count == 2, timeout=20)
    live.stop()
    assert "Shutting down: Master" in live.log()

    restarted = fal_server(tmp_path, fal).start()
    try:
        job = Client(restarted).wait_job(upload["job_id"], timeout=45)
    finally:
        restarted.stop()
    assert job["status"] == "completed" and job["completed_files"] == 2
    assert fal.submit_count == 2


def test_requests_in_flight_are_capped(tmp_path, fal):
    live = fal_server(tmp_path, fal, MAX_FAL_IN_FLIGHT=2).start()
    client = Client(live)
    try:
        images = [(f"q{n}.png", png_bytes(n)) for n in range(5)]
        upload = client.upload(images, model_type="tripo3d")
        most_open = 0

        def finished():
            nonlocal most_open
            open_requests = [s for s in fal.submits if fal.state(s["request_id"]) != "COMPLETED"]
            most_open = max(most_open, len(open_requests))
            return client.job(upload["job_id"])["status"] in ("completed", "failed")

        wait_until(finished, 30, message="capped job to finish")
        job = client.job(upload["job_id"])
    finally:
        live.stop()
    assert job["status"] == "completed" and fal.submit_count == 5
    assert 1 <= most_open <= 2


def test_sigterm_ends_open_streams_and_exits_gracefully(server, fal):
    fal.latency = 30.0
    client = Client(server)
    upload = client.upload([("s.png", png_bytes(1))], model_type="tripo3d")
    fal.wait_for(lambda: fal.submit_count == 1, timeout=20)
    connected, lines = threading.Event(), []

    def read_stream():
        url = server.url(f"/api/v1/status/tasks/{upload['task_id']}/stream")
        with requests.get(url, headers=client.headers, stream=True, timeout=60) as response:
            for line in response.iter_lines(decode_unicode=True):
                lines.append(line)
                connected.set()

    reader = threading.Thread(target=read_stream)
    reader.start()
    assert connected.wait(timeout=10)
    started = time.monotonic()
    server.stop(timeout=15)
    reader.join(timeout=15)
    assert not reader.is_alive()
    assert time.monotonic() - started < 10  # not the graceful timeout's SIGKILL
    assert "Worker exiting" in server.log() and "was sent SIGKILL" not in server.log()
    assert not any('"type": "completed"' in line or '"type": "error"' in line for line in lines)


def test_request_of_a_generation_that_ended_during_submit_is_cancelled(tmp_path, fal):
    live = fal_server(tmp_path, fal, JOB_TIMEOUT=1).start()
    fal.hang("submit", 3)
    try:
        _, job = failed_job(live, fal)
        assert job["status"] == "failed", job
        assert job["errors"][0]["code"] == "TIMEOUT"
        (submitted,) = fal.wait_for(lambda: fal.submits, timeout=10)
        fal.wait_for(
            lambda: [c for c in fal.cancels if c["request_id"] == submitted["request_id"]],
            timeout=10,
        )
    finally:
        fal.hang("submit", 0)
        live.stop()
