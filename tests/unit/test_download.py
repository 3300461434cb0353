"""Downloads: stored files listed and streamed, who may see them, and paths kept inside."""

import os
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ADMIN_KEY, OTHER_KEY, USER_KEY
from tests.helpers import assert_envelope, completed_job, execute, get, upload

SECRET = b"TOP-SECRET outside the results folder"


@pytest.fixture
def job(app, client):
    return completed_job(app, client)


def test_all_lists_model_and_preview_with_urls(client, job):
    body = get(client, f"/api/v1/download/{job['job_id']}/all").get_json()
    base = f"/api/v1/download/{job['job_id']}"
    assert body["job_id"] == job["job_id"] and body["total_files"] == 2
    assert body["download_urls"] == [f"{base}/chair.glb", f"{base}/chair.preview.png"]
    model, preview = body["files"]
    assert model["filename"] == "chair.glb" and model["mime_type"] == "model/gltf-binary"
    assert model["rendered_image"] == f"{base}/chair.preview.png"
    assert preview["filename"] == "chair.preview.png" and preview["mime_type"] == "image/png"
    assert preview["rendered_image"] is None
    for entry in body["files"]:
        stat = (job["dir"] / entry["filename"]).stat()
        assert entry["size"] == stat.st_size
        assert entry["created_time"] == int(stat.st_mtime)


def test_all_never_lists_cache_temporary_or_stray_files(client, job):
    assert get(client, f"/api/v1/models/download/{job['job_id']}?format=obj").status_code == 200
    (job["dir"] / ".chair.glb.123.abc.part").write_bytes(b"partial")
    (job["dir"] / "notes.txt").write_bytes(b"stray")
    body = get(client, f"/api/v1/download/{job['job_id']}/all").get_json()
    assert [entry["filename"] for entry in body["files"]] == ["chair.glb", "chair.preview.png"]
    assert get(client, f"/api/v1/download/{job['job_id']}/notes.txt").status_code == 404


@pytest.mark.parametrize(
    "filename, mime_type", [("chair.glb", "model/gltf-binary"), ("chair.preview.png", "image/png")]
)
def test_stored_file_streams_with_type_and_attachment_name(client, job, filename, mime_type):
    response = get(client, f"/api/v1/download/{job['job_id']}/{filename}")
    assert response.status_code == 200
    assert response.mimetype == mime_type
    assert response.headers["Content-Disposition"] == f"attachment; filename={filename}"
    assert response.data == (job["dir"] / filename).read_bytes()
    assert "private" in response.headers["Cache-Control"]


def test_a_webp_preview_is_served_as_webp(app, client, job):
    Image.open(job["dir"] / "chair.preview.png").save(
        job["dir"] / "chair.preview.webp", format="WEBP"
    )
    execute(app, "UPDATE generations SET preview_file = 'chair.preview.webp'")
    body = get(client, f"/api/v1/download/{job['job_id']}/all").get_json()
    assert body["files"][1]["mime_type"] == "image/webp"
    response = get(client, f"/api/v1/download/{job['job_id']}/chair.preview.webp")
    assert response.status_code == 200 and response.mimetype == "image/webp"


def test_names_come_from_the_original_images(app, client):
    job = completed_job(app, client, ["My Chair.PNG", "стул.png", "twin.png", "twin.png"])
    names = []
    for entry in get(client, f"/api/v1/download/{job['job_id']}/all").get_json()["files"][::2]:
        response = get(client, f"/api/v1/download/{job['job_id']}/{entry['filename']}")
        names.append(response.headers["Content-Disposition"])
    assert names == [
        'attachment; filename="My Chair.glb"',
        "attachment; filename=.glb; filename*=UTF-8''%D1%81%D1%82%D1%83%D0%BB.glb",
        "attachment; filename=twin.glb",
        "attachment; filename=twin-2.glb",
    ]


def test_etag_answers_if_none_match_with_304(client, job):
    url = f"/api/v1/download/{job['job_id']}/chair.glb"
    etag = get(client, url).headers["ETag"]
    response = get(client, url, **{"If-None-Match": etag})
    assert response.status_code == 304 and response.data == b""
    assert get(client, url, **{"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize("fmt", [None, "stl"])
def test_range_returns_206_with_content_range(client, job, fmt):
    if fmt is None:
        url = f"/api/v1/download/{job['job_id']}/chair.glb"
    else:
        url = f"/api/v1/models/download/{job['job_id']}?format={fmt}"
    whole = get(client, url).data
    response = get(client, url, Range="bytes=10-29")
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 10-29/{len(whole)}"
    assert response.data == whole[10:30]


@pytest.mark.parametrize("byte_range", ["bytes=99999999-", "bytes=99999999-100000000"])
def test_unsatisfiable_range_is_416_in_the_envelope(client, job, byte_range):
    size = (job["dir"] / "chair.glb").stat().st_size
    response = get(client, f"/api/v1/download/{job['job_id']}/chair.glb", Range=byte_range)
    assert_envelope(response, 416, "RANGE_NOT_SATISFIABLE")
    assert response.headers["Content-Range"] == f"bytes */{size}"


def endpoints(job_id):
    """Return every download endpoint of a job's model."""
    return [
        f"/api/v1/download/{job_id}/all",
        f"/api/v1/download/{job_id}/chair.glb",
        "/api/v1/download/direct/chair.glb",
        f"/api/v1/models/download/{job_id}",
    ]


@pytest.mark.parametrize("index", range(4))
def test_another_keys_job_is_invisible_but_admin_sees_it(client, job, index):
    url = endpoints(job["job_id"])[index]
    assert_envelope(get(client, url, key=OTHER_KEY), 404, "NOT_FOUND")
    assert get(client, url, key=ADMIN_KEY).status_code == 200
    assert_envelope(get(client, url, key=None), 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.parametrize("index", range(4))
def test_a_deleted_job_is_404(app, client, job, index):
    execute(app, "UPDATE jobs SET deleted_at = 1 WHERE job_id = ?", job["job_id"])
    assert_envelope(get(client, endpoints(job["job_id"])[index]), 404, "NOT_FOUND")


@pytest.mark.parametrize("index", [0, 1, 3])
def test_a_job_not_completed_is_409_with_its_state(client, index):
    job = upload(client, ["chair.png"])
    detail = assert_envelope(get(client, endpoints(job["job_id"])[index]), 409, "CONFLICT")
    assert detail["details"] == {"job_id": job["job_id"], "status": "queued"} | (
        {"file_id": job["uploaded_files"][0]["file_id"]} if index == 1 else {}
    )


@pytest.mark.parametrize("url", ["/api/v1/download/job_nope/all", "/api/v1/models/download/x"])
def test_unknown_job_is_404(client, url):
    assert_envelope(get(client, url), 404, "NOT_FOUND")


def test_all_is_a_listing_and_direct_all_is_a_file_name(client, job):
    assert get(client, f"/api/v1/download/{job['job_id']}/all").get_json()["total_files"] == 2
    detail = assert_envelope(get(client, "/api/v1/download/direct/all"), 404, "NOT_FOUND")
    assert detail["details"] == {"filename": "all"}


def test_direct_finds_only_the_callers_files_and_refuses_to_guess(app, client, job):
    other = completed_job(app, client, ["chair.png"], key=OTHER_KEY)
    mine = get(client, "/api/v1/download/direct/chair.preview.png")
    assert mine.data == (job["dir"] / "chair.preview.png").read_bytes()
    theirs = get(client, "/api/v1/download/direct/chair.preview.png", key=OTHER_KEY)
    assert theirs.data == (other["dir"] / "chair.preview.png").read_bytes()
    detail = assert_envelope(
        get(client, "/api/v1/download/direct/chair.glb", ADMIN_KEY), 409, "CONFLICT"
    )
    assert detail["details"]["job_ids"] == sorted([job["job_id"], other["job_id"]])
    second = completed_job(app, client, ["chair.png"])
    detail = assert_envelope(get(client, "/api/v1/download/direct/chair.glb"), 409, "CONFLICT")
    assert detail["details"]["job_ids"] == sorted([job["job_id"], second["job_id"]])


# Raw URL text: Werkzeug decodes %2F (and every escape) before routing, as a real server does.
ATTACKS = [
    "..",
    "%2e%2e",
    ".%2e",
    "..%2f..%2f..%2fsecret.txt",
    "..%2F..%2Fimage2model.sqlite3",
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "..\\..\\secret.txt",
    "%5c..%5c..%5csecret.txt",
    "chair.glb%00.png",
    "%00",
    ".cache",
    ".cache%2Fchair.obj.zip",
    "%252e%252e%252fsecret.txt",
    "a" * 300,
    "b" * 5000 + ".glb",
]


@pytest.fixture
def outside(app):
    """Put a secret file beside the data folder and in the instance folder, outside results."""
    for folder in (Path(app.instance_path).parent, Path(app.instance_path)):
        (folder / "secret.txt").write_bytes(SECRET)
    return Path(app.instance_path).parent


def assert_refused(response):
    """A refusal is a 400 or 404 envelope that carries nothing of the secret."""
    assert response.status_code in (400, 404), (response.status_code, response.data[:200])
    assert_envelope(response, response.status_code, response.get_json()["detail"]["code"])
    assert SECRET not in response.data


@pytest.mark.parametrize(
    "template",
    [
        "/api/v1/download/{job}/{attack}",
        "/api/v1/download/{attack}/chair.glb",
        "/api/v1/download/{attack}/all",
        "/api/v1/download/direct/{attack}",
        "/api/v1/models/download/{attack}",
        "/api/v1/models/download/{job}?format=glb&file_id={attack}",
        "/api/v1/models/download/{job}?format={attack}",
        "/api/v1/models/download/{job}?format=stl&units={attack}",
    ],
)
def test_traversal_is_refused_on_every_endpoint(client, job, outside, template):
    for attack in ATTACKS:
        for key in (USER_KEY, ADMIN_KEY):
            url = template.format(job=job["job_id"], attack=attack)
            response = get(client, url, key)
            assert response.status_code in (400, 404), (url, response.status_code)
            assert_refused(response)
    # a refused request leaves nothing behind, not even a cache folder
    assert sorted(os.listdir(job["dir"])) == ["chair.glb", "chair.preview.png"]


def test_a_link_out_planted_in_a_job_folder_is_never_followed(client, job, outside):
    glb = job["dir"] / "chair.glb"
    glb.unlink()
    glb.symlink_to(outside / "secret.txt")
    (job["dir"] / "planted.glb").symlink_to(outside / "secret.txt")
    for url in [
        *endpoints(job["job_id"])[1:],
        f"/api/v1/download/{job['job_id']}/planted.glb",
        f"/api/v1/models/download/{job['job_id']}?format=glb",
        f"/api/v1/models/download/{job['job_id']}?format=stl",
    ]:
        assert_refused(get(client, url))
    listed = get(client, f"/api/v1/download/{job['job_id']}/all").get_json()
    assert [entry["filename"] for entry in listed["files"]] == ["chair.preview.png"]


def test_a_job_folder_linked_out_is_never_followed(client, job, outside):
    copy = outside / "elsewhere"
    job["dir"].rename(copy)
    job["dir"].symlink_to(copy)
    for url in endpoints(job["job_id"])[1:]:
        assert_refused(get(client, url))
    assert not (copy / ".cache").exists()


def test_a_cache_folder_linked_out_is_never_written(client, job, outside):
    target = outside / "cache-target"
    target.mkdir()
    (job["dir"] / ".cache").symlink_to(target)
    assert_refused(get(client, f"/api/v1/models/download/{job['job_id']}?format=ply"))
    assert list(target.iterdir()) == []


def test_a_link_out_in_the_results_folder_is_refused_by_name(app, client, job, outside):
    (Path(app.instance_path) / "results" / "planted").symlink_to(outside / "secret.txt")
    assert_refused(get(client, "/api/v1/download/direct/planted"))
    assert_refused(get(client, "/api/v1/download/planted/all"))
