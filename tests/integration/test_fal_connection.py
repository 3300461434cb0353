"""Integration: how the real server uses fal-client against the stand-in: connections, the
submit that is never resent, the result fetched once, and the public result files."""

import pytest

from tests.fal_standin import FalStandIn
from tests.pipeline_helpers import Client, fal_server, png_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def fal():
    """A FAL stand-in with short latency and no queue."""
    with FalStandIn(latency=0.3, queue_time=0.0, queue_ahead=0) as standin:
        yield standin


def run_job(server, images, timeout=45):
    """Upload images for tripo3d and wait for the job to end; return (upload, job)."""
    client = Client(server)
    upload = client.upload(
        [(f"img-{n}.png", png_bytes(n)) for n in range(images)], model_type="tripo3d"
    )
    return upload, client.wait_job(upload["job_id"], timeout=timeout)


def job_on_a_fresh_server(tmp_path, fal, images):
    """Run one job on a server of its own; return (server, upload, job) once it stopped."""
    live = fal_server(tmp_path, fal).start()
    try:
        upload, job = run_job(live, images)
    finally:
        live.stop()
    return live, upload, job


def calls_of(fal, stage):
    """Return the stand-in's calls of one stage."""
    return [call for call in fal.calls if call["stage"] == stage]


def test_uploads_and_result_downloads_reuse_their_connections(tmp_path, fal):
    live = fal_server(tmp_path, fal, POOL_SIZE=2).start()
    try:
        _, first = run_job(live, 6)
        _, second = run_job(live, 2)
    finally:
        live.stop()
    assert first["status"] == second["status"] == "completed"
    uploads, downloads = calls_of(fal, "upload"), calls_of(fal, "download")
    assert len(uploads) == 8 and len(downloads) == 16  # a mesh and a preview per image
    # fal-client alone opens a connection (and an SSL context) for every upload.
    assert len({call["connection"] for call in uploads}) <= 2
    assert len({call["connection"] for call in downloads}) <= 2


def test_the_fal_key_goes_to_the_queue_but_never_to_result_files(tmp_path, fal):
    _, _, job = job_on_a_fresh_server(tmp_path, fal, 2)
    assert job["status"] == "completed"
    assert {call["auth_scheme"] for call in calls_of(fal, "submit")} == {"Key"}
    assert {call["auth_scheme"] for call in calls_of(fal, "status")} == {"Key"}
    assert {call["auth_scheme"] for call in calls_of(fal, "download")} == {None}


def test_fal_store_io_off_asks_fal_to_keep_no_copy_of_any_queue_call(tmp_path, fal):
    live = fal_server(tmp_path, fal, FAL_STORE_IO="false").start()
    try:
        _, job = run_job(live, 1)
    finally:
        live.stop()
    assert job["status"] == "completed"
    queue_calls = [c for c in fal.calls if c["stage"] in ("submit", "status", "result")]
    assert queue_calls and {call["store_io"] for call in queue_calls} == {"0"}


def test_by_default_fal_keeps_its_copies_as_it_does_for_everyone(tmp_path, fal):
    job_on_a_fresh_server(tmp_path, fal, 1)
    assert {call["store_io"] for call in fal.calls} == {None}


def test_a_submit_whose_answer_is_lost_is_never_sent_again(tmp_path, fal):
    fal.drop_next("submit")  # FAL accepts the request, then the connection breaks
    _, _, job = job_on_a_fresh_server(tmp_path, fal, 1)
    assert job["status"] == "failed"
    assert job["errors"][0]["code"] == "FAL_API_ERROR"
    assert "twice" in job["errors"][0]["message"]
    assert fal.submit_count == 1 and len(calls_of(fal, "submit")) == 1


def test_a_completed_request_is_fetched_without_asking_its_status_again(tmp_path, fal):
    _, _, job = job_on_a_fresh_server(tmp_path, fal, 1)
    assert job["status"] == "completed"
    queue_calls = [call for call in fal.calls if call["stage"] in ("status", "result")]
    completed_at = next(
        index
        for index, call in enumerate(queue_calls)
        if call["stage"] == "status" and call["status"] == 200
    )
    assert [call["stage"] for call in queue_calls[completed_at:]] == ["status", "result"]


def test_a_result_file_that_is_refused_fails_without_retry(tmp_path, fal):
    fal.fail_next("download", 404)
    live, upload, job = job_on_a_fresh_server(tmp_path, fal, 1)
    assert job["status"] == "failed" and job["errors"][0]["code"] == "FAL_API_ERROR"
    assert "HTTP 404" in job["errors"][0]["message"]
    assert len(calls_of(fal, "download")) == 1 and len(calls_of(fal, "result")) == 1
    results = live.instance_path / "results" / upload["job_id"]
    assert not results.exists() or not list(results.iterdir())  # no partial file left


def test_a_result_file_that_fails_for_a_while_is_downloaded_again(tmp_path, fal):
    fal.fail_next("download", 503, times=2)
    _, _, job = job_on_a_fresh_server(tmp_path, fal, 1)
    assert job["status"] == "completed"
    assert fal.submit_count == 1 and len(calls_of(fal, "result")) == 3


def test_a_submit_answer_cut_off_in_its_body_is_never_sent_again(tmp_path, fal):
    fal.cut_next("submit")  # FAL accepts the request and starts answering, then the line breaks
    _, _, job = job_on_a_fresh_server(tmp_path, fal, 1)
    assert job["status"] == "failed" and "twice" in job["errors"][0]["message"]
    assert fal.submit_count == 1 and len(calls_of(fal, "submit")) == 1
