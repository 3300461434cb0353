"""Status endpoints: per-file progress, task status, the task's event stream; derived states."""

import time
from datetime import datetime

import pytest

from image2model.pipeline import lifecycle
from image2model.store import db, events, jobs
from tests import images
from tests.conftest import ADMIN_KEY, OTHER_KEY, USER_KEY, bearer
from tests.helpers import assert_envelope
from tests.images import parse_sse, uploaded

EVENT_TYPES = {"progress", "log", "completed", "error"}
TERMINAL_TYPES = {"completed", "error"}


@pytest.fixture
def app_config(app_config, monkeypatch):
    """No FAL key from the environment: every job here is a relief job."""
    monkeypatch.delenv("FAL_KEY", raising=False)
    return app_config


def finished(app, client, files):
    """Upload `files`, run every due step inline and return the upload's body."""
    body = images.uploaded_with_ghosts(client, files)
    lifecycle.get_dispatcher(app).run_due()
    return body


def get(client, url, key=USER_KEY, **kwargs):
    """GET with a key's Authorization header (none for key=None)."""
    headers = {**(bearer(key) if key else {}), **kwargs.pop("headers", {})}
    return client.get(url, headers=headers, **kwargs)


def stream(client, task_id, key=USER_KEY, headers=None, **query):
    """Read a task's whole stream; return `(response, text, seconds it took)`.

    The timeout is always bounded, so a stream that fails to end cannot hang the test run.
    """
    query.setdefault("timeout", "10")
    started = time.monotonic()
    response = get(
        client,
        f"/api/v1/status/tasks/{task_id}/stream",
        key,
        headers=headers or {},
        query_string=query,
    )
    text = response.get_data(as_text=True)
    return response, text, time.monotonic() - started


def stored_event_ids(app, job_id):
    """Return the ids of a job's events in the database."""
    return [
        row["id"] for row in images.query(app, "SELECT id FROM events WHERE job_id = ?", job_id)
    ]


# --- /status/jobs/{job_id}/progress -------------------------------------------------------------


def test_progress_has_a_per_file_map_before_and_after(app, client):
    body = images.uploaded_with_ghosts(
        client, [("chair.png", images.png()), ("ghost.png", images.transparent_png())]
    )
    chair, ghost = (entry["file_id"] for entry in body["uploaded_files"])
    url = f"/api/v1/status/jobs/{body['job_id']}/progress"

    before = get(client, url).get_json()
    assert before["job_id"] == body["job_id"]
    assert (before["overall_progress"], before["total_files"]) == (0, 2)
    assert (before["completed_files"], before["failed_files"]) == (0, 0)
    assert before["files"] == {
        chair: {"status": "queued", "progress": 0, "filename": "chair.png"},
        ghost: {"status": "queued", "progress": 0, "filename": "ghost.png"},
    }

    lifecycle.get_dispatcher(app).run_due()

    after = get(client, url).get_json()
    assert (after["completed_files"], after["failed_files"]) == (1, 1)
    assert after["files"][chair]["status"] == "completed"
    assert after["files"][chair]["progress"] == 100
    assert after["files"][chair]["filename"] == "chair.png"
    assert after["files"][chair]["model_url"] == f"/api/v1/download/{body['job_id']}/chair.glb"
    assert after["files"][ghost]["status"] == "failed"
    assert after["files"][ghost]["filename"] == "ghost.png"
    assert "transparent" in after["files"][ghost]["error"]["message"]
    assert after["files"][ghost]["error"]["code"]
    assert 0 < after["overall_progress"] <= 100


# --- /status/tasks/{task_id}/status -------------------------------------------------------------


def test_task_status_queued(client):
    body = uploaded(client, [("chair.png", images.png())])
    status = get(client, f"/api/v1/status/tasks/{body['task_id']}/status").get_json()
    assert (status["task_id"], status["status"], status["progress"]) == (
        body["task_id"],
        "queued",
        0,
    )
    assert status["result"] is None and status["error"] is None


def test_task_status_completed_has_its_result(app, client):
    body = finished(app, client, [("chair.png", images.png())])
    status = get(client, f"/api/v1/status/tasks/{body['task_id']}/status").get_json()
    assert (status["status"], status["progress"], status["error"]) == ("completed", 100, None)
    assert status["result"]["model_url"] == f"/api/v1/download/{body['job_id']}/chair.glb"
    assert status["result"]["result"] == "success"
    datetime.fromisoformat(status["timestamp"].replace("Z", "+00:00"))


def test_task_status_failed_has_its_error(app, client):
    body = finished(app, client, [("ghost.png", images.transparent_png())])
    status = get(client, f"/api/v1/status/tasks/{body['task_id']}/status").get_json()
    assert status["status"] == "failed"
    assert status["result"] is None
    assert isinstance(status["error"], str) and "transparent" in status["error"]


# --- ownership, for every endpoint of the group -------------------------------------------------

STATUS_URLS = [
    "/api/v1/status/jobs/{job_id}/progress",
    "/api/v1/status/tasks/{task_id}/status",
    "/api/v1/status/tasks/{task_id}/stream?timeout=1",
]


@pytest.mark.parametrize("template", STATUS_URLS)
@pytest.mark.parametrize(
    ("key", "status"), [(USER_KEY, 200), (ADMIN_KEY, 200), (OTHER_KEY, 404), (None, 401)]
)
def test_status_is_for_the_owner_and_the_admin(app, client, template, key, status):
    body = finished(app, client, [("chair.png", images.png())])
    response = get(client, template.format(**body), key)
    if status == 200:
        assert response.status_code == 200
        assert body["job_id"] in response.get_data(as_text=True)
    else:
        assert_envelope(
            response, status, "NOT_FOUND" if status == 404 else "AUTHENTICATION_REQUIRED"
        )


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/status/jobs/job_000000000000000000000000/progress",
        "/api/v1/status/tasks/task_000000000000000000000000/status",
        "/api/v1/status/tasks/task_000000000000000000000000/stream",
    ],
)
def test_unknown_job_or_task_is_404(client, url):
    assert_envelope(get(client, url, ADMIN_KEY), 404, "NOT_FOUND")


def test_a_job_id_is_not_a_task_id(client):
    body = uploaded(client, [("chair.png", images.png())])
    response = get(client, f"/api/v1/status/tasks/{body['job_id']}/status")
    assert_envelope(response, 404, "NOT_FOUND")


# --- /status/tasks/{task_id}/stream -------------------------------------------------------------


def test_stream_of_a_finished_job_replays_every_event_and_ends(app, client):
    body = finished(app, client, [("chair.png", images.png()), ("lamp.jpg", images.jpeg())])
    response, text, seconds = stream(client, body["task_id"])

    assert response.status_code == 200
    assert seconds < 5, "the stream did not end after its terminal event"
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    found, retry, _comments = parse_sse(text)
    assert retry is not None and int(retry) > 0
    assert [event["id"] for event in found] == stored_event_ids(app, body["job_id"])
    for event in found:
        assert event["data"]["type"] in EVENT_TYPES
        assert event["data"]["task_id"] == body["task_id"]
    assert [e["data"]["type"] for e in found].count("log") > 0
    assert [e["data"]["type"] in TERMINAL_TYPES for e in found] == [False] * (len(found) - 1) + [
        True
    ]
    last = found[-1]["data"]
    assert last["type"] == "completed"
    assert last["result"] == "success"
    assert last["model_url"] == f"/api/v1/download/{body['job_id']}/chair.glb"


def test_stream_progress_never_decreases(app, client):
    body = finished(
        app,
        client,
        [
            ("a.png", images.png()),
            ("b.jpg", images.jpeg()),
            ("ghost.png", images.transparent_png()),
        ],
    )
    found, _, _ = parse_sse(stream(client, body["task_id"])[1])
    snapshots = [e["data"] for e in found if e["data"]["type"] == "progress"]
    assert len(snapshots) > 3
    per_file = {}
    overall = 0
    for snapshot in snapshots:
        assert snapshot["progress"] >= overall
        overall = snapshot["progress"]
        for file_id, entry in snapshot["files"].items():
            assert entry["progress"] >= per_file.get(file_id, 0), (file_id, entry)
            per_file[file_id] = entry["progress"]
    assert sorted(per_file.values())[-2:] == [100, 100]


@pytest.mark.parametrize("how", ["header", "query"])
def test_last_event_id_replays_only_later_events(app, client, how):
    body = finished(app, client, [("chair.png", images.png())])
    all_ids = stored_event_ids(app, body["job_id"])
    middle = all_ids[len(all_ids) // 2]
    if how == "header":
        _, text, seconds = stream(client, body["task_id"], headers={"Last-Event-ID": str(middle)})
    else:
        _, text, seconds = stream(client, body["task_id"], last_event_id=str(middle))
    assert seconds < 5
    found, _, _ = parse_sse(text)
    assert [event["id"] for event in found] == [i for i in all_ids if i > middle]
    assert found[-1]["data"]["type"] == "completed"


@pytest.mark.parametrize("timeout", ["0", "-1", "x", "1.5", "86401", "1e3"])
def test_stream_timeout_is_bounded(client, timeout):
    body = uploaded(client, [("chair.png", images.png())])
    response = get(client, f"/api/v1/status/tasks/{body['task_id']}/stream?timeout={timeout}")
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "timeout" in detail["details"]


def test_stream_of_a_queued_job_ends_at_its_timeout_without_terminal_event(app, client):
    body = uploaded(client, [("chair.png", images.png())])
    app.config["SSE_HEARTBEAT"] = 0.2
    response, text, seconds = stream(client, body["task_id"], timeout="1")
    assert response.status_code == 200
    assert 0.9 <= seconds < 5
    found, retry, comments = parse_sse(text)
    assert retry is not None
    assert [event["data"]["type"] for event in found] == ["progress"]
    assert found[0]["data"]["status"] == "queued"
    assert len(comments) >= 3  # heartbeats every 0.2 s, then the end of the stream


def test_stream_is_woken_when_the_job_changes(app, client):
    body = uploaded(client, [("chair.png", images.png())])
    app.config["SSE_HEARTBEAT"] = 10  # any wake-up before that comes from a notification
    url = f"/api/v1/status/tasks/{body['task_id']}/stream?timeout=15"
    reader = images.StreamReader(client, url, bearer(USER_KEY))
    reader.start()
    assert reader.first_event.wait(5)
    started = time.monotonic()

    lifecycle.get_dispatcher(app).run_due()

    reader.join(timeout=5)
    assert not reader.is_alive(), "the stream did not end after the job completed"
    assert time.monotonic() - started < 5
    found, _, _ = parse_sse(reader.text)
    assert found[-1]["data"]["type"] == "completed"
    assert [event["id"] for event in found] == stored_event_ids(app, body["job_id"])


def test_stream_of_a_failed_job_ends_with_an_error_event(app, client):
    body = finished(app, client, [("ghost.png", images.transparent_png())])
    _, text, seconds = stream(client, body["task_id"])
    assert seconds < 5, "the stream did not end after its terminal event"
    found, _, _ = parse_sse(text)
    types = [event["data"]["type"] for event in found]
    assert "completed" not in types
    assert types[-1] == "error"
    assert "transparent" in found[-1]["data"]["error"]
    assert found[-1]["data"]["task_id"] == body["task_id"]


def test_stream_replays_more_than_a_page_of_events_without_stalling(app, client):
    body = uploaded(client, [("chair.png", images.png())])
    conn = images.connect(app)
    try:
        file_id = body["uploaded_files"][0]["file_id"]
        with db.transaction(conn):
            for number in range(600):
                events.record(
                    conn, body["job_id"], "log", {"file_id": file_id, "message": f"line {number}"}
                )
    finally:
        conn.close()
    lifecycle.get_dispatcher(app).run_due()
    app.config["SSE_HEARTBEAT"] = 2

    _, text, seconds = stream(client, body["task_id"], timeout="5")

    found, _, _ = parse_sse(text)
    assert found and found[-1]["data"]["type"] == "completed", "the replay did not reach the end"
    assert len(found) == len(stored_event_ids(app, body["job_id"]))
    assert seconds < 1.5, f"replay took {seconds:.1f}s: it waited between pages of events"


def test_stream_resumed_after_the_terminal_event_ends_promptly(app, client):
    # An EventSource reconnects by itself when a stream closes, sending the id of the last event
    # it saw, here the terminal one: the server must not hold that connection until the timeout.
    body = finished(app, client, [("chair.png", images.png())])
    last = stored_event_ids(app, body["job_id"])[-1]
    response, text, seconds = stream(
        client, body["task_id"], headers={"Last-Event-ID": str(last)}, timeout="3"
    )
    assert response.status_code in (200, 204)
    assert seconds < 1.5, f"the stream stayed open {seconds:.1f}s after its job had ended"
    found, _, _ = parse_sse(text)
    assert all(event["data"]["type"] in TERMINAL_TYPES for event in found)


# --- derived states -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "derived"),
    [
        ([], "queued"),
        (["queued"], "queued"),
        (["queued", "queued"], "queued"),
        (["submitted"], "processing"),
        (["processing"], "processing"),
        (["downloading"], "processing"),
        (["queued", "processing"], "processing"),
        (["queued", "completed"], "processing"),
        (["queued", "failed"], "processing"),
        (["processing", "failed"], "processing"),
        (["downloading", "completed", "cancelled"], "processing"),
        (["completed"], "completed"),
        (["completed", "completed"], "completed"),
        (["completed", "failed"], "completed"),
        (["failed", "completed", "cancelled"], "completed"),
        (["failed"], "failed"),
        (["failed", "failed"], "failed"),
        (["failed", "cancelled"], "failed"),
        (["cancelled", "failed"], "failed"),
        (["cancelled"], "cancelled"),
        (["cancelled", "cancelled"], "cancelled"),
    ],
)
def test_job_state_is_derived_from_its_generations(states, derived):
    assert jobs.job_state(states) == derived


def test_open_streams_per_key_are_capped(app, client):
    app.config["SSE_MAX_STREAMS_PER_KEY"] = 1
    body = uploaded(client, [("a.png", images.png())])
    url = f"/api/v1/status/tasks/{body['task_id']}/stream?timeout=5"
    first = client.get(url, headers=bearer(USER_KEY), buffered=False)
    assert first.status_code == 200
    second = get(client, url)
    assert_envelope(second, 429, "RATE_LIMIT_EXCEEDED")
    other = client.get(url.replace("timeout=5", "timeout=1"), headers=bearer(ADMIN_KEY))
    assert other.status_code == 200  # another key has its own slots
    first.close()
    third = get(client, url.replace("timeout=5", "timeout=1"))
    assert third.status_code == 200  # closing the first stream freed its slot


def test_stream_sends_the_events_of_one_look_as_one_chunk(app, client):
    from image2model.web import sse

    body = images.uploaded(client, [("a.png", images.png())])
    lifecycle.get_dispatcher(app).run_due()
    stored = images.query(app, "SELECT id FROM events WHERE job_id = ?", body["job_id"])
    chunks = list(sse.stream(app, body["job_id"], body["task_id"], 0, timeout=5, heartbeat=15))
    assert chunks[0].startswith("retry: ") and len(chunks) == 2
    assert chunks[1].count("id: ") == len(stored) > 3
