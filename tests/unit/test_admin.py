"""Admin endpoints: the admin key everywhere (admin and logs), disk usage, list-files and its
refusal of every other directory, system health."""

import os

import pytest

from image2model.files import tree
from image2model.pipeline import lifecycle
from tests import images
from tests.conftest import ADMIN_KEY, OTHER_KEY, USER_KEY, bearer
from tests.helpers import assert_envelope, finished_job, queued_job

GB = 1024**3
MB = 1024**2
EXPORT_ID = "export_0123456789abcdef01234567"

# Every admin and logs endpoint, with a request that would be valid for the admin.
ENDPOINTS = [
    ("GET", "/api/v1/admin/disk-usage", None),
    ("POST", "/api/v1/admin/cleanup", {"hours": 24, "dry_run": True}),
    ("POST", "/api/v1/admin/cleanup-job", {"job_id": "job_0123"}),
    ("GET", "/api/v1/admin/list-files?directory=uploads", None),
    ("DELETE", "/api/v1/admin/delete-job/job_0123", None),
    ("GET", "/api/v1/admin/system-health", None),
    ("GET", "/api/v1/logs/statistics", None),
    ("POST", "/api/v1/logs/rotate", None),
    ("DELETE", "/api/v1/logs/cleanup?older_than_days=30", None),
    ("GET", "/api/v1/logs/analyze?log_type=access&hours_back=1", None),
    ("GET", "/api/v1/logs/summary/daily?date=2024-03-15", None),
    ("GET", "/api/v1/logs/types", None),
    ("POST", "/api/v1/logs/export?start_date=2024-03-15&end_date=2024-03-15", None),
    ("GET", f"/api/v1/logs/export/{EXPORT_ID}", None),
    ("GET", f"/api/v1/logs/export/{EXPORT_ID}/download", None),
    ("GET", "/api/v1/logs/health", None),
]
IDS = [f"{method} {path.split('?')[0]}" for method, path, _body in ENDPOINTS]


def call(client, method, path, body=None, key=ADMIN_KEY):
    """Send one request with a key (none for key=None)."""
    headers = bearer(key) if key else {}
    return client.open(path, method=method, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("key", [USER_KEY, OTHER_KEY])
def test_user_keys_get_403_everywhere(app, client, method, path, body, key):
    before = sorted(os.listdir(os.path.join(app.instance_path, "logs")))
    assert_envelope(call(client, method, path, body, key), 403, "INVALID_API_KEY")
    assert sorted(os.listdir(os.path.join(app.instance_path, "logs"))) == before  # no rotation


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("key", [None, "not-a-key-at-all"])
def test_no_or_unknown_key_gets_401_everywhere(client, method, path, body, key):
    response = call(client, method, path, body, key)
    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# What the admin gets from each endpoint: the ids above are unknown (404), exports start (202).
EXPECTED_FOR_ADMIN = {
    "POST /api/v1/admin/cleanup-job": 404,
    "DELETE /api/v1/admin/delete-job/job_0123": 404,
    "POST /api/v1/logs/export": 202,
    f"GET /api/v1/logs/export/{EXPORT_ID}": 404,
    f"GET /api/v1/logs/export/{EXPORT_ID}/download": 404,
}


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=IDS)
def test_the_admin_key_is_let_through_everywhere(client, method, path, body):
    response = call(client, method, path, body)
    expected = EXPECTED_FOR_ADMIN.get(f"{method} {path.split('?')[0]}", 200)
    assert response.status_code == expected, response.get_data(as_text=True)
    if expected == 404:
        assert response.get_json()["detail"]["code"] == "NOT_FOUND"
    response.close()


# --- disk-usage -----------------------------------------------------------------------------------


def test_disk_usage_reports_each_directory(app, client):
    finished_job(app, client)
    body = call(client, "GET", "/api/v1/admin/disk-usage").get_json()
    for field, name in (("upload_dir", "uploads"), ("output_dir", "results")):
        own_bytes, files = tree.directory_size(os.path.join(app.instance_path, name))
        figures = body[field]
        assert figures["file_count"] == files and files > 0
        assert figures["directory_size_mb"] == round(own_bytes / MB, 3)
        assert figures["total_gb"] >= figures["used_gb"] > 0
        assert 0 < figures["usage_percent"] <= 100
    assert body["timestamp"].endswith("Z")


# --- list-files ---------------------------------------------------------------------------------


def list_files(client, **query):
    """GET list-files with the admin key."""
    return client.get("/api/v1/admin/list-files", query_string=query, headers=bearer(ADMIN_KEY))


def test_list_files_lists_batches_with_sizes_counts_and_times(app, client):
    first = images.uploaded(client, [("a.png", images.png()), ("b.jpg", images.jpeg())])
    second = images.uploaded(client, [("c.png", images.png((30, 30)))])

    body = list_files(client, directory="uploads").get_json()

    assert body["directory"] == "uploads"
    assert body["total_files"] == 3 and body["total_items"] == 2 and not body["truncated"]
    total = tree.directory_size(os.path.join(app.instance_path, "uploads"))[0]
    assert body["total_size_mb"] == round(total / MB, 3)
    by_path = {item["path"]: item for item in body["items"]}
    assert set(by_path) == {first["batch_id"], second["batch_id"]}
    for upload, count in ((first, 2), (second, 1)):
        item = by_path[upload["batch_id"]]
        folder = os.path.join(app.instance_path, "uploads", upload["batch_id"])
        assert item["is_directory"] is True and item["is_symlink"] is False
        assert item["file_count"] == count
        assert item["size_bytes"] == tree.directory_size(folder)[0]
        assert item["size_mb"] == round(item["size_bytes"] / MB, 3)
        assert item["modified"].endswith("Z")


def test_list_files_of_results_shows_each_jobs_folder(app, client):
    body = finished_job(app, client)
    listing = list_files(client, directory="results").get_json()
    (item,) = listing["items"]
    assert item["path"] == body["job_id"] and item["file_count"] == 2
    assert listing["total_files"] == 2


def test_list_files_is_newest_first_and_bounded(app, client):
    uploads = [images.uploaded(client, [(f"{n}.png", images.png())]) for n in range(3)]
    for age, upload in enumerate(reversed(uploads)):  # the last upload is the newest
        folder = os.path.join(app.instance_path, "uploads", upload["batch_id"])
        when = 1_700_000_000 - age * 60
        os.utime(folder, (when, when))

    body = list_files(client, directory="uploads", limit=2).get_json()

    assert [item["path"] for item in body["items"]] == [u["batch_id"] for u in uploads[::-1][:2]]
    assert body["truncated"] is True and body["total_items"] == 3 and body["limit"] == 2


def test_list_files_shows_a_file_and_a_link_without_following_it(app, client, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret-outside.txt").write_bytes(b"s" * 5000)
    uploads = os.path.join(app.instance_path, "uploads")
    os.makedirs(uploads, exist_ok=True)
    os.symlink(outside, os.path.join(uploads, "link-out"))
    with open(os.path.join(uploads, "loose.bin"), "wb") as handle:
        handle.write(b"x" * 1234)

    response = list_files(client, directory="uploads")

    body = response.get_json()
    by_path = {item["path"]: item for item in body["items"]}
    assert by_path["loose.bin"]["is_directory"] is False
    assert by_path["loose.bin"]["size_bytes"] == 1234 and by_path["loose.bin"]["file_count"] is None
    link = by_path["link-out"]
    assert link["is_symlink"] is True and link["is_directory"] is False
    assert link["size_bytes"] == 0 and link["file_count"] is None
    assert body["total_files"] == 1
    assert "secret-outside" not in response.get_data(as_text=True)


TRAVERSALS = [
    "../",
    "..",
    "..%2f",
    "..%2F..%2Fetc",
    "%2e%2e%2f",
    "uploads/../results",
    "uploads/..",
    "uploads/",
    "./uploads",
    "/etc",
    "/",
    os.sep + "tmp",
    "logs",
    "exports",
    "instance",
    "UPLOADS",
    "uploads%00",
    "uploads\x00",
    "uploads\\..\\results",
    "results/job_x",
    " uploads",
]


@pytest.mark.parametrize("directory", TRAVERSALS)
def test_list_files_refuses_every_other_directory(client, directory):
    response = list_files(client, directory=directory)
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert detail["details"]["allowed"] == ["uploads", "results"]
    assert "items" not in response.get_json()


@pytest.mark.parametrize("raw", ["..%2f", "%2e%2e%2f", "..%252f", "%2Fetc%2Fpasswd"])
def test_list_files_refuses_encoded_traversal_in_the_raw_query(client, raw):
    response = client.get(f"/api/v1/admin/list-files?directory={raw}", headers=bearer(ADMIN_KEY))
    assert_envelope(response, 400, "VALIDATION_ERROR")


def test_list_files_needs_a_directory(client):
    detail = assert_envelope(list_files(client), 400, "VALIDATION_ERROR")
    assert detail["details"]["field"] == "directory"


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "ten", "1.5", "1e3"])
def test_list_files_limit_is_bounded(client, limit):
    detail = assert_envelope(
        list_files(client, directory="uploads", limit=limit), 400, "VALIDATION_ERROR"
    )
    assert "limit" in detail["details"]


# --- system-health ------------------------------------------------------------------------------


@pytest.fixture
def app_config(app_config, monkeypatch, request):
    """No FAL key from the environment; a test may add settings with indirect parametrization."""
    monkeypatch.delenv("FAL_KEY", raising=False)
    return {**app_config, **getattr(request, "param", {})}


THRESHOLDS = {
    "healthy": {"DISK_WARNING_PERCENT": 100, "DISK_CRITICAL_PERCENT": 100, "DISK_MIN_FREE_MB": 0},
    "warning": {"DISK_WARNING_PERCENT": 0, "DISK_CRITICAL_PERCENT": 100, "DISK_MIN_FREE_MB": 0},
    "critical": {"DISK_WARNING_PERCENT": 0, "DISK_CRITICAL_PERCENT": 0, "DISK_MIN_FREE_MB": 0},
    "critical by free space": {"DISK_WARNING_PERCENT": 100, "DISK_MIN_FREE_MB": 10**12},
}


@pytest.mark.parametrize(
    ("app_config", "status"),
    [(settings, name.split()[0]) for name, settings in THRESHOLDS.items()],
    indirect=["app_config"],
    ids=list(THRESHOLDS),
)
def test_system_health_status_follows_the_disk_thresholds(client, status):
    body = call(client, "GET", "/api/v1/admin/system-health").get_json()
    assert body["status"] == status


def test_system_health_reports_sizes_and_retention(app, client):
    finished_job(app, client)
    queued_job(client, "other.png")

    body = call(client, "GET", "/api/v1/admin/system-health").get_json()

    for name in ("uploads", "results", "logs"):
        own = tree.directory_size(os.path.join(app.instance_path, name))[0]
        assert body["disk_usage"][f"{name}_gb"] == round(own / GB, 6)
    assert 0 < body["disk_usage"]["usage_percent"] <= 100
    assert body["thresholds"]["warning_percent"] == 80
    assert body["thresholds"]["critical_percent"] == 90
    assert body["retention"] == {"enabled": False, "hours": 72.0, "interval_seconds": 3600.0}
    assert body["cleanup_status"] == {"last_run": None, "files_cleaned": 0, "space_freed_mb": 0.0}
    assert body["timestamp"].endswith("Z")


def test_delete_of_a_timed_out_job_whose_step_still_runs_is_409(app, client):
    body = finished_job(app, client)
    from image2model.store import db

    conn = db.connect(db.database_path(app))
    try:
        with db.transaction(conn):
            conn.execute(
                "UPDATE generations SET state = 'failed', claimed_by = ?, lease_until = ?",
                (lifecycle.get_dispatcher(app).identity, 4102444800),
            )
    finally:
        conn.close()
    response = call(client, "DELETE", f"/api/v1/admin/delete-job/{body['job_id']}")
    assert_envelope(response, 409, "CONFLICT")


def test_cleanup_body_is_held_to_the_json_limit(client):
    response = client.post(
        "/api/v1/admin/cleanup",
        data=b'{"hours": 24, "pad": "' + b"x" * 200_000 + b'"}',
        content_type="application/json",
        headers=bearer(ADMIN_KEY),
    )
    assert_envelope(response, 413, "FILE_TOO_LARGE")
