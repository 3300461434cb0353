"""Model generation endpoints: the generator list, new jobs from uploaded files, job status."""

import json
import os
import re

import pytest

from image2model.pipeline import lifecycle
from tests import images
from tests.conftest import ADMIN_KEY, OTHER_KEY, USER_KEY, bearer
from tests.helpers import assert_envelope
from tests.images import uploaded

GENERATE_URL = "/api/v1/models/generate"
FAL = {"FAL_KEY": "dummy-fal-key-for-validation-only"}
# With a FAL key set, tripo3d jobs are created and checked here but never run: no due step is
# executed in the tests marked with it (that would call the network).
WITH_FAL = pytest.mark.parametrize("app_config", [FAL], indirect=True, ids=["fal-key"])
JOB_TABLES = ("jobs", "generations", "events")


@pytest.fixture
def app_config(app_config, monkeypatch, request):
    """No FAL key from the environment; a test may add settings with indirect parametrization."""
    monkeypatch.delenv("FAL_KEY", raising=False)
    return {**app_config, **getattr(request, "param", {})}


@pytest.fixture
def chair(client):
    """Upload chair.png as USER_KEY and return its file id."""
    return uploaded(client, [("chair.png", images.png())])["uploaded_files"][0]["file_id"]


def generate(client, body, key=USER_KEY):
    """POST a JSON body to /models/generate."""
    return client.post(GENERATE_URL, json=body, headers=bearer(key))


def job_counts(app):
    """Return the row counts of the job tables."""
    counts = images.row_counts(app)
    return {table: counts[table] for table in JOB_TABLES}


def job_status(client, job_id, key=USER_KEY):
    """GET /models/job/{job_id}."""
    return client.get(f"/api/v1/models/job/{job_id}", headers=bearer(key))


# --- /models/available --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app_config", "available", "default"),
    [
        pytest.param({}, {"tripo3d": False, "relief": True}, "relief", id="no-fal-key"),
        pytest.param(FAL, {"tripo3d": True, "relief": True}, "tripo3d", id="fal-key"),
    ],
    indirect=["app_config"],
)
def test_available_lists_both_generators(client, available, default):
    response = client.get("/api/v1/models/available", headers=bearer(USER_KEY))
    assert response.status_code == 200
    entries = {entry["type"]: entry for entry in response.get_json()}
    assert set(entries) == {"tripo3d", "relief"}
    for model_type, entry in entries.items():
        assert entry["name"] and entry["description"]
        assert {"glb", "obj"} <= set(entry["supported_formats"])
        assert entry["available"] is available[model_type]
        assert entry["default"] is (model_type == default)
        if not entry["available"]:
            assert "FAL_KEY" in entry["unavailable_reason"]


def test_available_needs_a_key(client):
    assert_envelope(client.get("/api/v1/models/available"), 401, "AUTHENTICATION_REQUIRED")


# --- /models/generate ---------------------------------------------------------------------------


def test_generate_from_an_upload_then_follow_the_job_to_its_model(app, client, chair):
    response = generate(client, {"file_id": chair, "model_type": "relief"})
    assert response.status_code == 202
    body = response.get_json()
    assert re.fullmatch(r"job_\w{24,}", body["job_id"])
    assert re.fullmatch(r"task_\w{24,}", body["task_id"])
    assert body["status"] in ("queued", "processing")
    assert isinstance(body["estimated_time"], int | float) and body["estimated_time"] > 0
    assert body["file_id"] == chair
    job_id = body["job_id"]
    job_row = images.query(app, "SELECT * FROM jobs WHERE job_id = ?", job_id)[0]
    assert (job_row["task_id"], job_row["batch_id"], job_row["model_type"]) == (
        body["task_id"],
        None,
        "relief",
    )
    generations = images.query(app, "SELECT file_id FROM generations WHERE job_id = ?", job_id)
    assert [row["file_id"] for row in generations] == [chair]

    queued = job_status(client, job_id).get_json()
    assert (queued["job_id"], queued["status"], queued["progress"]) == (job_id, "queued", 0)
    assert queued["model_url"] is None
    assert queued["estimated_time_remaining"] > 0

    lifecycle.get_dispatcher(app).run_due()

    done = job_status(client, job_id).get_json()
    assert (done["status"], done["progress"]) == ("completed", 100)
    assert done["model_url"] == f"/api/v1/download/{job_id}/chair.glb"
    assert done["estimated_time_remaining"] == 0
    assert done["errors"] == []
    with open(os.path.join(app.instance_path, "results", job_id, "chair.glb"), "rb") as handle:
        assert handle.read(4) == b"glTF"


def test_generate_uses_the_default_generator(app, client, chair):
    job_id = generate(client, {"file_id": chair}).get_json()["job_id"]
    rows = images.query(app, "SELECT model_type FROM jobs WHERE job_id = ?", job_id)
    assert rows[0]["model_type"] == "relief"


MALFORMED = [
    pytest.param(b'{"file_id": ', "application/json", id="malformed json"),
    pytest.param(b"", "application/json", id="empty body"),
    pytest.param(b'["file_x"]', "application/json", id="json array"),
    pytest.param(b'"file_x"', "application/json", id="json string"),
    pytest.param(b"null", "application/json", id="json null"),
    pytest.param(b"file_id=file_x", "application/x-www-form-urlencoded", id="form body"),
]


@pytest.mark.parametrize(("raw", "content_type"), MALFORMED)
def test_generate_refuses_a_body_that_is_not_a_json_object(app, client, chair, raw, content_type):
    before = job_counts(app)
    response = client.post(
        GENERATE_URL, data=raw, content_type=content_type, headers=bearer(USER_KEY)
    )
    assert_envelope(response, 400, "VALIDATION_ERROR")
    assert job_counts(app) == before


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "field"),
        ({"file_id": None}, 400, "field"),
        ({"file_id": ""}, 400, "field"),
        ({"file_id": 5}, 400, "field"),
        ({"file_id": ["file_x"]}, 400, "field"),
        ({"file_id": "file_000000000000000000000000"}, 404, "file_id"),
        ({"file_id": "CHAIR", "model_type": "blender"}, 400, "model_type"),
        ({"file_id": "CHAIR", "model_type": "tripo3d"}, 400, "model_type"),
        ({"file_id": "CHAIR", "width_mm": -1}, 400, "width_mm"),
        ({"file_id": "CHAIR", "invert": "perhaps"}, 400, "invert"),
        ({"file_id": "CHAIR", "face_limit": 10**9}, 400, "face_limit"),
    ],
)
def test_generate_refuses_bad_input_without_creating_a_job(app, client, chair, body, status, field):
    body = {key: (chair if value == "CHAIR" else value) for key, value in body.items()}
    before = job_counts(app)
    detail = assert_envelope(
        generate(client, body), status, "NOT_FOUND" if status == 404 else "VALIDATION_ERROR"
    )
    assert field in detail["details"]
    if body.get("model_type") == "tripo3d":
        assert "FAL_KEY" in detail["message"]
    assert job_counts(app) == before


@pytest.mark.parametrize(
    ("key", "status"), [(OTHER_KEY, 404), (ADMIN_KEY, 202), (None, 401), ("nope", 401)]
)
def test_generate_from_a_file_is_for_its_owner_and_the_admin(app, client, chair, key, status):
    before = job_counts(app)
    response = client.post(
        GENERATE_URL, json={"file_id": chair}, headers=bearer(key) if key else {}
    )
    if status == 202:
        assert response.status_code == 202
        return
    code = "NOT_FOUND" if status == 404 else "AUTHENTICATION_REQUIRED"
    assert_envelope(response, status, code)
    assert job_counts(app) == before


# --- Tripo3D options, stored with the job but never run here ------------------------------------


@WITH_FAL
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, {"texture": "standard"}),
        ({"quality": "standard"}, {"texture": "standard"}),
        ({"quality": "high"}, {"texture": "HD"}),
        ({"quality": "HD"}, {"texture": "HD"}),
        ({"quality": "hd"}, {"texture": "HD"}),
        ({"texture_enabled": True}, {"texture": "standard"}),
        ({"texture_enabled": True, "quality": "high"}, {"texture": "HD"}),
        ({"texture_enabled": False}, {"texture": "no"}),
        ({"texture_enabled": False, "quality": "high"}, {"texture": "no"}),
        ({"texture_enabled": "false"}, {"texture": "no"}),
        ({"texture": "HD"}, {"texture": "HD"}),
        ({"texture": "no"}, {"texture": "no"}),
        ({"face_limit": 5000}, {"face_limit": 5000, "texture": "standard"}),
        ({"face_limit": "20000"}, {"face_limit": 20000, "texture": "standard"}),
        (
            {"texture_alignment": "geometry", "orientation": "align_image"},
            {"texture": "standard", "texture_alignment": "geometry", "orientation": "align_image"},
        ),
    ],
)
def test_tripo3d_options_are_mapped_and_stored(app, client, chair, extra, expected):
    response = generate(client, {"file_id": chair, "model_type": "tripo3d", **extra})
    assert response.status_code == 202, response.get_data(as_text=True)
    job_id = response.get_json()["job_id"]
    row = images.query(app, "SELECT model_type, options FROM jobs WHERE job_id = ?", job_id)[0]
    assert row["model_type"] == "tripo3d"
    assert json.loads(row["options"]) == expected
    generation = images.query(app, "SELECT * FROM generations WHERE job_id = ?", job_id)[0]
    assert (generation["state"], generation["fal_request_id"]) == ("queued", None)


@WITH_FAL
def test_tripo3d_is_the_default_with_a_fal_key(app, client, chair):
    job_id = generate(client, {"file_id": chair}).get_json()["job_id"]
    rows = images.query(app, "SELECT model_type FROM jobs WHERE job_id = ?", job_id)
    assert rows[0]["model_type"] == "tripo3d"


TEXTURE_BAD_OPTIONS = [
    ({"quality": "ultra"}, "quality"),
    ({"quality": 5}, "quality"),
    ({"texture_enabled": "maybe"}, "texture_enabled"),
    ({"texture_enabled": 2}, "texture_enabled"),
    ({"texture": "hd"}, "texture"),
    ({"texture": True}, "texture"),
]


@WITH_FAL
@pytest.mark.parametrize(
    ("model_type", "extra", "field"),
    [
        *(("relief", extra, field) for extra, field in TEXTURE_BAD_OPTIONS),
        *(("tripo3d", extra, field) for extra, field in TEXTURE_BAD_OPTIONS),
        ("tripo3d", {"face_limit": 10**9}, "face_limit"),
        ("tripo3d", {"face_limit": 99}, "face_limit"),
        ("tripo3d", {"face_limit": -5}, "face_limit"),
        ("tripo3d", {"face_limit": 1.5}, "face_limit"),
        ("tripo3d", {"face_limit": True}, "face_limit"),
        ("tripo3d", {"face_limit": "many"}, "face_limit"),
        ("tripo3d", {"texture_alignment": "sideways"}, "texture_alignment"),
        ("tripo3d", {"orientation": "upside_down"}, "orientation"),
        ("tripo3d", {"face_limit": 10**400}, "face_limit"),
        ("relief", {"face_limit": 10**400}, "face_limit"),
        ("relief", {"width_mm": 10**400}, "width_mm"),
    ],
)
def test_bad_options_are_400(app, client, chair, model_type, extra, field):
    before = job_counts(app)
    response = generate(client, {"file_id": chair, "model_type": model_type, **extra})
    assert field in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert job_counts(app) == before


def test_relief_reports_every_bad_option_at_once(app, client, chair):
    body = {"file_id": chair, "model_type": "relief", "face_limit": 5, "quality": "ultra"}
    details = assert_envelope(generate(client, body), 400, "VALIDATION_ERROR")["details"]
    assert set(details) == {"face_limit", "quality"}
    assert "quality must be one of" in details["quality"]


@pytest.mark.parametrize(
    ("extra", "textured"),
    [
        ({}, True),
        ({"quality": "high"}, True),
        ({"texture": "HD"}, True),
        ({"texture_enabled": False}, False),
        ({"texture": "no"}, False),
    ],
)
def test_relief_honours_texture_enabled(app, client, chair, extra, textured):
    response = generate(client, {"file_id": chair, "model_type": "relief", **extra})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert images.job_options(app, response.get_json()["job_id"])["textured"] is textured


@WITH_FAL
def test_tripo3d_options_from_the_upload_form_are_stored(app, client):
    body = uploaded(
        client,
        [("a.png", images.png())],
        model_type="tripo3d",
        face_limit="3000",
        quality="high",
        texture_enabled="true",
    )
    assert images.job_options(app, body["job_id"]) == {"face_limit": 3000, "texture": "HD"}


# --- /models/job/{job_id} -----------------------------------------------------------------------


def test_job_of_a_batch_lists_every_model_under_unique_names(app, client):
    body = uploaded(
        client,
        [("chair.png", images.png()), ("chair.png", images.jpeg()), ("../lamp.jpg", images.jpeg())],
    )
    lifecycle.get_dispatcher(app).run_due()
    job = job_status(client, body["job_id"]).get_json()
    base = f"/api/v1/download/{body['job_id']}"
    assert job["model_urls"] == [f"{base}/chair.glb", f"{base}/chair-2.glb", f"{base}/lamp.glb"]
    assert job["model_url"] == f"{base}/chair.glb"
    assert (job["total_files"], job["completed_files"], job["failed_files"]) == (3, 3, 0)
    results = os.path.join(app.instance_path, "results", body["job_id"])
    assert {"chair.glb", "chair-2.glb", "lamp.glb"} <= set(os.listdir(results))


def test_failed_job_reports_its_error(app, client):
    body = images.uploaded_with_ghosts(client, [("ghost.png", images.transparent_png())])
    lifecycle.get_dispatcher(app).run_due()
    job = job_status(client, body["job_id"]).get_json()
    assert job["status"] == "failed"
    assert job["model_url"] is None and job["model_urls"] == []
    assert job["failed_files"] == 1
    [error] = job["errors"]
    assert error["file_id"] == body["uploaded_files"][0]["file_id"]
    assert error["code"] and "transparent" in error["message"]
    assert job["estimated_time_remaining"] == 0


@pytest.mark.parametrize(
    ("key", "status"), [(USER_KEY, 200), (OTHER_KEY, 404), (ADMIN_KEY, 200), (None, 401)]
)
def test_job_status_is_for_its_owner_and_the_admin(client, key, status):
    job_id = uploaded(client, [("a.png", images.png())])["job_id"]
    response = client.get(f"/api/v1/models/job/{job_id}", headers=bearer(key) if key else {})
    if status == 200:
        assert response.status_code == 200
        assert response.get_json()["job_id"] == job_id
    else:
        assert_envelope(
            response, status, "NOT_FOUND" if status == 404 else "AUTHENTICATION_REQUIRED"
        )


def test_unknown_job_is_404(client):
    response = job_status(client, "job_000000000000000000000000", key=ADMIN_KEY)
    assert_envelope(response, 404, "NOT_FOUND")


def test_generate_from_a_file_of_a_deleted_job_is_404(app, client):
    body = images.uploaded(client, [("a.png", images.png())])
    lifecycle.get_dispatcher(app).run_due()
    deleted = client.delete(f"/api/v1/admin/delete-job/{body['job_id']}", headers=bearer(ADMIN_KEY))
    assert deleted.status_code == 200
    response = client.post(
        "/api/v1/models/generate",
        json={"file_id": body["uploaded_files"][0]["file_id"]},
        headers=bearer(USER_KEY),
    )
    assert response.status_code == 404
