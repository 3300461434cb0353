"""The admin debug view of a job: what the store holds, and never a secret."""

import os
import re
from pathlib import Path

import pytest

from image2model.pipeline import lifecycle
from image2model.web import keys
from tests.conftest import ADMIN_KEY, OTHER_KEY, USER_KEY
from tests.helpers import assert_envelope, completed_job, execute, get, upload

FAL_KEY = "fal-secret-key-0123456789:abcdef"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def app_config(app_config):
    return {**app_config, "FAL_KEY": FAL_KEY}


def debug(client, job_id, key=ADMIN_KEY):
    return get(client, f"/api/v1/debug/job/{job_id}", key)


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        (None, 401, "AUTHENTICATION_REQUIRED"),
        ("wrong-key", 401, "AUTHENTICATION_REQUIRED"),
        (USER_KEY, 403, "INVALID_API_KEY"),
        (OTHER_KEY, 403, "INVALID_API_KEY"),
    ],
)
def test_only_an_admin_key_may_debug(client, key, status, code):
    job = upload(client, ["chair.png"])
    assert_envelope(debug(client, job["job_id"], key), status, code)


def test_a_completed_job_shows_files_states_and_timings(app, client):
    job = completed_job(app, client)
    get(client, f"/api/v1/models/download/{job['job_id']}?format=stl")
    body = debug(client, job["job_id"]).get_json()
    assert body["job_id"] == job["job_id"] and body["found"] is True
    assert body["files"] == [".cache/chair.stl-mm.stl", "chair.glb", "chair.preview.png"]
    metadata = body["metadata"]
    assert metadata["status"] == "completed" and metadata["model_type"] == "relief"
    assert metadata["owner"].startswith("env:") and metadata["task_id"] == job["task_id"]
    assert ISO_UTC.match(metadata["created"]) and metadata["deleted"] is None
    (generation,) = metadata["generations"]
    assert generation["file_id"] == job["uploaded_files"][0]["file_id"]
    assert generation["state"] == "completed" and generation["progress"] == 100
    assert generation["result_file"] == "chair.glb" and generation["error"] is None
    times = generation["times"]
    assert all(ISO_UTC.match(times[name]) for name in ("created", "started", "finished"))
    assert times["created"] <= times["started"] <= times["finished"]


def test_fal_request_id_attempts_and_error_are_reported(app, client):
    job = upload(client, ["chair.png"])
    execute(
        app,
        "UPDATE generations SET state = 'failed', fal_request_id = 'req-42', attempts = 3,"
        " error_code = 'FAL_API_ERROR', error_message = 'upstream said no' WHERE job_id = ?",
        job["job_id"],
    )
    (generation,) = debug(client, job["job_id"]).get_json()["metadata"]["generations"]
    assert generation["fal_request_id"] == "req-42" and generation["attempts"] == 3
    assert generation["error"] == {"code": "FAL_API_ERROR", "message": "upstream said no"}


def test_an_unknown_job_is_not_found(client):
    body = debug(client, "job_nope").get_json()
    assert body == {"job_id": "job_nope", "found": False, "files": [], "metadata": None}


def test_a_deleted_job_is_still_shown_to_the_admin(app, client):
    job = completed_job(app, client)
    execute(app, "UPDATE jobs SET deleted_at = 1700000000 WHERE job_id = ?", job["job_id"])
    body = debug(client, job["job_id"]).get_json()
    assert body["found"] is True
    assert body["metadata"]["deleted"] == "2023-11-14T22:13:20.000000Z"


def test_no_key_secret_or_database_location_leaks(app, client):
    job = completed_job(app, client)
    text = debug(client, job["job_id"]).get_data(as_text=True)
    hashes = [keys.hash_key(key) for key in (USER_KEY, OTHER_KEY, ADMIN_KEY)]
    for secret in (USER_KEY, OTHER_KEY, ADMIN_KEY, FAL_KEY, *hashes, app.instance_path, "sqlite"):
        assert secret not in text


def test_links_in_the_job_folder_are_not_listed(app, client):
    job = completed_job(app, client)
    folder = Path(app.instance_path, "results", job["job_id"])
    (folder / "planted.glb").symlink_to(Path(app.instance_path, "image2model.sqlite3"))
    (folder / "planted-folder").symlink_to(Path(app.instance_path))
    assert debug(client, job["job_id"]).get_json()["files"] == ["chair.glb", "chair.preview.png"]


@pytest.mark.parametrize(
    "attack", ["..", "%2e%2e", "..%2f..%2fsecret", "%2Fetc%2Fpasswd", "..\\x", "%00", "j" * 300]
)
def test_traversal_in_the_job_id_is_refused(client, attack):
    response = debug(client, attack)
    assert response.status_code in (400, 404)
    assert_envelope(response, response.status_code, response.get_json()["detail"]["code"])


def test_a_job_folder_linked_out_is_not_listed(app, client):
    job = completed_job(app, client)
    outside = Path(app.instance_path).parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    folder = Path(app.instance_path, "results", job["job_id"])
    for name in os.listdir(folder):
        os.remove(folder / name)
    folder.rmdir()
    folder.symlink_to(outside)
    body = debug(client, job["job_id"]).get_json()
    assert body["found"] is True and body["files"] == []


def test_a_held_poll_shows_when_it_runs_next(app, client):
    import time

    from tests.images import query

    job = upload(client, ["chair.png"])
    ((generation_id,),) = query(app, "SELECT id FROM generations WHERE job_id = ?", job["job_id"])
    due_at = time.time() + 600
    lifecycle.get_dispatcher(app).held.add(due_at, generation_id)
    (generation,) = debug(client, job["job_id"]).get_json()["metadata"]["generations"]
    assert generation["times"]["next_run"][:19] == time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(due_at)
    )
