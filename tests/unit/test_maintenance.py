"""Retention: cleanup of finished jobs (never one in flight), dry runs, deleting one job, orphans,
the recorded last run and the periodic retention thread."""

import os
import time

import pytest

from image2model import create_app
from image2model.files import maintenance
from image2model.files.tree import directory_size
from image2model.pipeline import lifecycle
from image2model.store import jobs
from tests import images
from tests.conftest import ADMIN_KEY, USER_KEY, bearer, with_config
from tests.helpers import assert_envelope, finished_job, job_states, queued_job
from tests.live_server import wait_until

HOUR = 3600
CLEANUP_URL = "/api/v1/admin/cleanup"
IN_FLIGHT_STATES = ("queued", *jobs.IN_FLIGHT)


# --- helpers (shared with test_admin) -----------------------------------------------------------


def job_paths(app, body):
    """Return the results folder and the upload folder of an upload's job."""
    return (
        os.path.join(app.instance_path, "results", body["job_id"]),
        os.path.join(app.instance_path, "uploads", body["batch_id"]),
    )


def age_tree(path, seconds):
    """Set the modification time of an entry and everything below it `seconds` into the past."""
    when = time.time() - seconds
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)


def age_job(app, body, hours):
    """Make an upload's job, batch, files and their folders look `hours` old."""
    when = time.time() - hours * HOUR
    conn = images.connect(app)
    try:
        conn.execute("UPDATE jobs SET created_at = ? WHERE job_id = ?", (when, body["job_id"]))
        conn.execute(
            "UPDATE generations SET created_at = ?, updated_at = ?,"
            " finished_at = CASE WHEN finished_at IS NULL THEN NULL ELSE ? END WHERE job_id = ?",
            (when, when, when, body["job_id"]),
        )
        conn.execute("UPDATE files SET created_at = ? WHERE batch_id = ?", (when, body["batch_id"]))
        conn.execute(
            "UPDATE batches SET created_at = ? WHERE batch_id = ?", (when, body["batch_id"])
        )
    finally:
        conn.close()
    for path in job_paths(app, body):
        if os.path.lexists(path):
            age_tree(path, hours * HOUR)


def set_state(app, job_id, state):
    """Force every generation of a job into `state` (a job in flight, for the tests)."""
    conn = images.connect(app)
    try:
        conn.execute("UPDATE generations SET state = ? WHERE job_id = ?", (state, job_id))
    finally:
        conn.close()


def tree(path):
    """Return every entry below `path` with its type, size and mtime (links not followed)."""
    listing = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            info = os.lstat(full)
            listing[os.path.relpath(full, path)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return listing


def instance_snapshot(app):
    """Return the data folder's uploads and results and the store's job, file and batch rows."""
    return {
        "uploads": tree(os.path.join(app.instance_path, "uploads")),
        "results": tree(os.path.join(app.instance_path, "results")),
        "rows": {
            table: [tuple(row) for row in images.query(app, f"SELECT * FROM {table}")]
            for table in ("jobs", "files", "batches", "generations")
        },
        "status_file": os.path.exists(os.path.join(app.instance_path, "cleanup_status.json")),
    }


def entry_figures(path):
    """Return `(bytes, files)` of regular files below a path."""
    return directory_size(path)


def job_endpoints(body):
    """Return the job-scoped GET URLs of an upload's job (each answers 200 while it exists)."""
    job_id = body["job_id"]
    stem = body["uploaded_files"][0]["filename"].rsplit(".", 1)[0]
    return [
        f"/api/v1/models/job/{job_id}",
        f"/api/v1/status/jobs/{job_id}/progress",
        f"/api/v1/status/tasks/{body['task_id']}/status",
        f"/api/v1/download/{job_id}/all",
        f"/api/v1/download/{job_id}/{stem}.glb",
        f"/api/v1/upload/status/{body['uploaded_files'][0]['file_id']}",
        f"/api/v1/upload/batch/{body['batch_id']}/status",
    ]


def assert_job_gone(client, body):
    """Check that every endpoint of a job answers 404, for its owner and for the admin."""
    for url in job_endpoints(body):
        for key in (USER_KEY, ADMIN_KEY):
            response = client.get(url, headers=bearer(key))
            assert_envelope(response, 404, "NOT_FOUND")
            response.close()


def assert_job_served(client, body):
    """Check that every endpoint of a job answers 200."""
    for url in job_endpoints(body):
        response = client.get(url, headers=bearer(USER_KEY))
        assert response.status_code == 200, (url, response.get_data(as_text=True)[:200])
        response.close()


def cleanup(client, key=ADMIN_KEY, **body):
    """POST a cleanup request with the admin key."""
    return client.post(CLEANUP_URL, json=body, headers=bearer(key))


# --- cleanup --------------------------------------------------------------------------------------


@pytest.fixture
def mixed_jobs(app, client):
    """An old finished job, a recent finished job and old jobs in every in-flight state."""
    old = finished_job(app, client, "old.png")
    recent = finished_job(app, client, "recent.png")
    in_flight = {}
    for state in IN_FLIGHT_STATES:
        body = queued_job(client, f"{state}.png")
        if state != "queued":
            set_state(app, body["job_id"], state)
            partial = os.path.join(app.instance_path, "results", body["job_id"])
            os.makedirs(partial)
            with open(os.path.join(partial, f"{state}.glb"), "wb") as handle:
                handle.write(b"glTF partial")
        in_flight[state] = body
    age_job(app, old, 48)
    age_job(app, recent, 2)
    for body in in_flight.values():
        age_job(app, body, 48)
    return old, recent, in_flight


def test_cleanup_removes_old_finished_jobs_only(app, client, mixed_jobs):
    old, recent, in_flight = mixed_jobs
    old_results, old_uploads = job_paths(app, old)
    freed = entry_figures(old_results)[0] + entry_figures(old_uploads)[0]

    response = cleanup(client, hours=24)

    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert report["jobs"] == [old["job_id"]] and report["jobs_removed"] == 1
    assert report["files_removed"] == 3  # the upload, the GLB and its preview
    assert report["directories_removed"] == 2
    assert report["freed_bytes"] == freed
    assert report["freed_space_mb"] == round(freed / 1024**2, 3)
    assert report["errors"] == [] and report["dry_run"] is False
    assert report["cleanup_hours"] == 24
    assert sorted(report["paths"]) == sorted(
        [f"results/{old['job_id']}", f"uploads/{old['batch_id']}"]
    )
    assert not os.path.lexists(old_results) and not os.path.lexists(old_uploads)
    for body in [recent, *in_flight.values()]:
        assert os.path.isdir(job_paths(app, body)[1])
    for state, body in in_flight.items():
        if state != "queued":
            assert os.listdir(job_paths(app, body)[0]) == [f"{state}.glb"]
    assert os.path.isdir(job_paths(app, recent)[0])
    for state, body in in_flight.items():
        assert job_states(app, body["job_id"]) == [state]
    assert_job_gone(client, old)
    assert_job_served(client, recent)


def test_cleanup_counts_hours_from_the_finish_not_the_start(app, client):
    body = finished_job(app, client)
    age_job(app, body, 48)
    conn = images.connect(app)
    try:  # created two days ago, but finished only an hour ago
        conn.execute(
            "UPDATE generations SET finished_at = ? WHERE job_id = ?",
            (time.time() - HOUR, body["job_id"]),
        )
    finally:
        conn.close()
    assert cleanup(client, hours=24).get_json()["jobs_removed"] == 0
    assert cleanup(client, hours=1).get_json()["jobs"] == [body["job_id"]]


def test_dry_run_reports_exactly_what_would_go_and_changes_nothing(app, client, mixed_jobs):
    before = instance_snapshot(app)

    dry = cleanup(client, hours=24, dry_run=True)

    assert dry.status_code == 200
    assert instance_snapshot(app) == before
    real = cleanup(client, hours=24).get_json()
    report = dry.get_json()
    assert report["dry_run"] is True and report["files_removed"] == 3
    for field in ("jobs", "paths", "files_removed", "directories_removed", "freed_bytes"):
        assert report[field] == real[field], field
    assert instance_snapshot(app) != before


def test_dry_run_is_not_recorded_and_a_real_run_is(app, client, mixed_jobs):
    cleanup(client, hours=24, dry_run=True)
    health = client.get("/api/v1/admin/system-health", headers=bearer(ADMIN_KEY)).get_json()
    assert health["cleanup_status"]["last_run"] is None

    report = cleanup(client, hours=24).get_json()

    status = client.get("/api/v1/admin/system-health", headers=bearer(ADMIN_KEY)).json[
        "cleanup_status"
    ]
    assert status["last_run"] and status["trigger"] == "manual"
    assert status["files_cleaned"] == report["files_removed"] == 3
    assert status["space_freed_mb"] == report["freed_space_mb"]
    assert status["jobs_removed"] == 1 and status["errors"] == 0


def test_an_upload_used_by_a_later_job_stays_until_that_job_goes(app, client):
    first = finished_job(app, client)
    file_id = first["uploaded_files"][0]["file_id"]
    generated = client.post(
        "/api/v1/models/generate",
        json={"file_id": file_id, "model_type": "relief"},
        headers=bearer(USER_KEY),
    ).get_json()
    lifecycle.get_dispatcher(app).run_due()
    age_job(app, first, 48)
    results, uploads = job_paths(app, first)

    report = cleanup(client, hours=24).get_json()

    assert report["jobs"] == [first["job_id"]]
    assert not os.path.exists(results)
    assert os.listdir(uploads)  # the later job still uses the image
    later_results = os.path.join(app.instance_path, "results", generated["job_id"])
    age_tree(later_results, 48 * HOUR)
    images.query(
        app,
        "UPDATE generations SET finished_at = ?, updated_at = ? WHERE job_id = ?",
        time.time() - 48 * HOUR,
        time.time() - 48 * HOUR,
        generated["job_id"],
    )
    images.query(
        app,
        "UPDATE jobs SET created_at = ? WHERE job_id = ?",
        time.time() - 48 * HOUR,
        generated["job_id"],
    )

    second = cleanup(client, hours=24).get_json()

    assert second["jobs"] == [generated["job_id"]]
    assert not os.path.exists(uploads) and not os.path.exists(later_results)


def test_orphans_go_only_once_old_and_links_are_removed_not_followed(app, client, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    results = os.path.join(app.instance_path, "results")
    uploads = os.path.join(app.instance_path, "uploads")
    for base, name in ((results, "job_unknown_old"), (uploads, "batch_unknown_old")):
        os.makedirs(os.path.join(base, name))
        with open(os.path.join(base, name, "leftover.bin"), "wb") as handle:
            handle.write(b"x" * 100)
        age_tree(os.path.join(base, name), 48 * HOUR)
    os.makedirs(os.path.join(uploads, "batch_being_written"))
    with open(os.path.join(uploads, "batch_being_written", "file_x.png"), "wb") as handle:
        handle.write(b"new")
    link = os.path.join(results, "job_link")
    os.symlink(outside, link)
    when = time.time() - 48 * HOUR
    os.utime(link, (when, when), follow_symlinks=False)

    report = cleanup(client, hours=24).get_json()

    assert sorted(report["paths"]) == [
        "results/job_link",
        "results/job_unknown_old",
        "uploads/batch_unknown_old",
    ]
    assert report["files_removed"] == 3 and report["freed_bytes"] == 200
    assert os.listdir(results) == []
    assert os.listdir(uploads) == ["batch_being_written"]
    assert (outside / "precious.txt").read_text() == "keep me"


def test_a_stray_file_in_a_batch_folder_goes_with_its_job(app, client):
    body = finished_job(app, client)
    uploads = job_paths(app, body)[1]
    with open(os.path.join(uploads, ".file_x.png.123.part"), "wb") as handle:
        handle.write(b"partial")
    age_job(app, body, 48)
    assert cleanup(client, hours=24).get_json()["files_removed"] == 4
    assert not os.path.exists(uploads)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hours": 0}, "hours"),
        ({"hours": -5}, "hours"),
        ({"hours": "soon"}, "hours"),
        ({"hours": 1.5}, "hours"),
        ({"hours": True}, "hours"),
        ({"hours": 10**9}, "hours"),
        ({"hours": 24, "dry_run": "yes"}, "dry_run"),
        ({"hours": 24, "dry_run": 1}, "dry_run"),
    ],
)
def test_cleanup_rejects_bad_input(client, body, field):
    detail = assert_envelope(cleanup(client, **body), 400, "VALIDATION_ERROR")
    assert field in detail["details"]


@pytest.mark.parametrize("raw", [b"[1]", b"{oops", b'"24"'])
def test_cleanup_rejects_a_body_that_is_not_an_object(client, raw):
    response = client.post(
        CLEANUP_URL, data=raw, content_type="application/json", headers=bearer(ADMIN_KEY)
    )
    assert_envelope(response, 400, "VALIDATION_ERROR")


def test_cleanup_without_a_body_uses_the_retention_hours(app, client):
    body = finished_job(app, client)
    age_job(app, body, 71)
    report = client.post(CLEANUP_URL, headers=bearer(ADMIN_KEY)).get_json()
    assert report["cleanup_hours"] == 72 and report["jobs_removed"] == 0
    age_job(app, body, 73)
    assert client.post(CLEANUP_URL, headers=bearer(ADMIN_KEY)).json["jobs_removed"] == 1


# --- one job: cleanup-job and delete-job ----------------------------------------------------------


def delete_one(client, how, job_id, key=ADMIN_KEY):
    """Delete a job's files through cleanup-job or delete-job."""
    if how == "cleanup-job":
        return client.post(
            "/api/v1/admin/cleanup-job", json={"job_id": job_id}, headers=bearer(key)
        )
    return client.delete(f"/api/v1/admin/delete-job/{job_id}", headers=bearer(key))


HOW = ["cleanup-job", "delete-job"]


@pytest.mark.parametrize("how", HOW)
def test_deleting_a_finished_job_removes_its_files_and_the_job(app, client, how):
    body = finished_job(app, client)
    other = finished_job(app, client, "other.png")
    assert_job_served(client, body)
    results, uploads = job_paths(app, body)
    freed = entry_figures(results)[0] + entry_figures(uploads)[0]

    response = delete_one(client, how, body["job_id"])

    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    files_key = "files_removed" if how == "cleanup-job" else "files_deleted"
    assert report["job_id"] == body["job_id"] and report["status"] == "success"
    assert report[files_key] == 3 and report["directories_removed"] == 2
    assert report["freed_bytes"] == freed
    assert report["space_freed_mb"] == round(freed / 1024**2, 3)
    assert not os.path.lexists(results) and not os.path.lexists(uploads)
    assert_job_gone(client, body)
    assert_envelope(delete_one(client, how, body["job_id"]), 404, "NOT_FOUND")
    assert all(os.path.exists(path) for path in job_paths(app, other))


@pytest.mark.parametrize("state", IN_FLIGHT_STATES)
@pytest.mark.parametrize("how", HOW)
def test_a_job_in_flight_is_refused_with_409_and_kept(app, client, how, state):
    body = queued_job(client)
    if state != "queued":
        set_state(app, body["job_id"], state)
    before = instance_snapshot(app)

    detail = assert_envelope(delete_one(client, how, body["job_id"]), 409, "CONFLICT")

    assert detail["details"]["job_id"] == body["job_id"]
    assert detail["details"]["status"] == ("queued" if state == "queued" else "processing")
    assert instance_snapshot(app) == before


@pytest.mark.parametrize("how", HOW)
def test_deleting_an_unknown_job_is_404(client, how):
    assert_envelope(delete_one(client, how, "job_0123456789abcdef01234567"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "body", [{}, {"job_id": ""}, {"job_id": 5}, {"job_id": None}, {"job_id": "x" * 300}]
)
def test_cleanup_job_needs_a_job_id(client, body):
    response = client.post("/api/v1/admin/cleanup-job", json=body, headers=bearer(ADMIN_KEY))
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert detail["details"] == {"field": "job_id"}


def test_a_deleted_jobs_upload_shared_with_another_job_is_kept(app, client):
    body = finished_job(app, client)
    client.post(
        "/api/v1/models/generate",
        json={"file_id": body["uploaded_files"][0]["file_id"], "model_type": "relief"},
        headers=bearer(USER_KEY),
    )  # queued: uses the same image
    report = delete_one(client, "delete-job", body["job_id"]).get_json()
    assert report["files_deleted"] == 2  # the GLB and the preview, not the shared image
    assert os.listdir(job_paths(app, body)[1])


# --- retention ----------------------------------------------------------------------------------


def test_no_retention_thread_inline_or_when_disabled(app, app_config):
    assert "image2model.retention" not in app.extensions
    disabled = create_app({**app_config, "POOL_SIZE": 1, "RETENTION_INTERVAL": 0})
    try:
        assert "image2model.retention" not in disabled.extensions
    finally:
        lifecycle.shutdown(disabled)


@with_config(POOL_SIZE=1, RETENTION_INTERVAL=0.05, RETENTION_HOURS=24)
def test_retention_runs_the_same_cleanup_by_itself_and_stops(app, client):
    retention = app.extensions["image2model.retention"]
    assert retention._thread.is_alive() and retention._thread.daemon
    body = queued_job(client)
    wait_until(lambda: job_states(app, body["job_id"]) == ["completed"], 30, message="relief job")
    recent = queued_job(client, "recent.png")
    wait_until(lambda: job_states(app, recent["job_id"]) == ["completed"], 30, message="job 2")

    age_job(app, body, 48)

    def deleted():
        rows = images.query(app, "SELECT deleted_at FROM jobs WHERE job_id = ?", body["job_id"])
        return rows[0][0] is not None and maintenance.last_run(app)["jobs_removed"] == 1

    wait_until(deleted, 10, message="retention to remove the old job")
    assert not any(os.path.exists(path) for path in job_paths(app, body))
    assert maintenance.last_run(app)["trigger"] == "retention"
    assert all(os.path.exists(path) for path in job_paths(app, recent))
    with open(os.path.join(app.instance_path, "logs", "application.log")) as log:
        assert "Cleanup (retention, 24" in log.read()

    lifecycle.shutdown(app)
    assert not retention._thread.is_alive()


def test_bad_retention_hours_are_refused(app_config):
    with pytest.raises(ValueError, match="RETENTION_HOURS"):
        create_app({**app_config, "RETENTION_HOURS": 0})
