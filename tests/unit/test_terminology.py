"""One job in each state: every surface names the same state and shows the same progress."""

import json

import pytest

from image2model.store import db, jobs
from tests import images
from tests.conftest import USER_KEY, bearer
from tests.images import parse_sse

# Per scenario: each file's (state, progress) in turn, then the job's state and progress.
SCENARIOS = {
    "all queued": ([("queued", 0), ("queued", 0), ("queued", 0)], "queued", 0.0),
    "starting": ([("queued", 0), ("submitted", 5), ("processing", 40)], "processing", 15.0),
    "one failed mid-way": (
        [("downloading", 90), ("completed", 100), ("failed", 30)],
        "processing",
        96.67,
    ),
    "two completed, one failed": (
        [("completed", 100), ("completed", 100), ("failed", 30)],
        "completed",
        100.0,
    ),
    "all failed": ([("failed", 30), ("failed", 60), ("failed", 0)], "failed", 100.0),
    "all cancelled": ([("cancelled", 0), ("cancelled", 10), ("cancelled", 0)], "cancelled", 100.0),
    "all completed": ([("completed", 100)] * 3, "completed", 100.0),
}


def move(app, job_id, targets):
    """Take the job's generations through the state machine to `(state, progress)` each."""
    conn = db.connect(db.database_path(app))
    try:
        rows = conn.execute(
            "SELECT id FROM generations WHERE job_id = ? ORDER BY id", (job_id,)
        ).fetchall()
        for row, (state, progress) in zip(rows, targets, strict=True):
            if state == "queued":
                continue
            fields = (
                {"error_code": "FAL_API_ERROR", "error_message": "no"} if state == "failed" else {}
            )
            assert jobs.transition(conn, row["id"], state, progress, **fields)
    finally:
        conn.close()


def surfaces(client, body):
    """Return `{surface: (state, progress)}` of one job as each endpoint reports it."""
    headers = bearer(USER_KEY)
    job = client.get(f"/api/v1/models/job/{body['job_id']}", headers=headers).get_json()
    progress = client.get(
        f"/api/v1/status/jobs/{body['job_id']}/progress", headers=headers
    ).get_json()
    batch = client.get(f"/api/v1/upload/batch/{body['batch_id']}/status", headers=headers)
    task = client.get(f"/api/v1/status/tasks/{body['task_id']}/status", headers=headers)
    return {
        "models/job": (job["status"], job["progress"]),
        "status/jobs/progress": (progress["status"], progress["overall_progress"]),
        "upload/batch/status": (batch.get_json()["status"], batch.get_json()["progress"]),
        "status/tasks/status": (task.get_json()["status"], task.get_json()["progress"]),
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_surface_agrees_on_state_and_progress(app, client, scenario):
    targets, state, progress = SCENARIOS[scenario]
    body = images.uploaded(client, [(f"{n}.png", images.png()) for n in range(3)])
    move(app, body["job_id"], targets)

    assert set(surfaces(client, body).values()) == {(state, progress)}
    last_progress = images.query(
        app,
        "SELECT payload FROM events WHERE job_id = ? AND type = 'progress' ORDER BY id DESC",
        body["job_id"],
    )[0]["payload"]
    assert (json.loads(last_progress)["status"], json.loads(last_progress)["progress"]) == (
        state,
        progress,
    )
    for uploaded, (file_state, file_progress) in zip(body["uploaded_files"], targets, strict=True):
        file_status = client.get(
            f"/api/v1/upload/status/{uploaded['file_id']}", headers=bearer(USER_KEY)
        ).get_json()
        # A file keeps its own last figure: a failed one says how far it got.
        assert (file_status["processing_status"], file_status["progress"]) == (
            file_state,
            file_progress,
        )
    if state in jobs.TERMINAL:
        response = client.get(
            f"/api/v1/status/tasks/{body['task_id']}/stream",
            headers=bearer(USER_KEY),
            query_string={"timeout": "5"},
        )
        terminal = parse_sse(response.get_data(as_text=True))[0][-1]["data"]
        assert terminal["type"] == ("completed" if state == "completed" else "error")
        assert (terminal["status"], terminal["progress"]) == (state, progress)
