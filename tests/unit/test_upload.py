"""Upload endpoints: content checks, all-or-nothing storage, options, identifiers, file and batch
status, ownership."""

import hashlib
import io
import os
import re
from datetime import UTC, datetime

import pytest
from PIL import Image

from image2model.files import storage
from image2model.pipeline import lifecycle
from image2model.store import jobs
from tests import images
from tests.conftest import ADMIN_KEY, OTHER_KEY, USER_KEY, bearer, with_config
from tests.helpers import assert_envelope
from tests.images import upload, uploaded

UPLOAD_URLS = ["/api/v1/upload/", "/api/v1/upload"]
FAL = {"FAL_KEY": "dummy-fal-key-for-validation-only"}
ID_SHAPES = {
    "batch": re.compile(r"batch_(\d{8}_\d{6})_([A-Za-z0-9_-]+)"),
    "job": re.compile(r"job_([A-Za-z0-9_-]+)"),
    "task": re.compile(r"task_([A-Za-z0-9_-]+)"),
    "file": re.compile(r"file_([A-Za-z0-9_-]+)"),
}


def random_bits(text):
    """Return the information content of a random identifier part, judged by its alphabet."""
    if re.fullmatch(r"[0-9a-f]+", text):
        return 4 * len(text)
    if re.fullmatch(r"[0-9A-Za-z]+", text):
        return 5.95 * len(text)
    return 6 * len(text)


def sha(data):
    return hashlib.sha256(data).hexdigest()


# --- success ------------------------------------------------------------------------------------

SETS = {
    "one jpeg": [("chair.jpg", images.jpeg(), "image/jpeg", "image/jpeg")],
    "one png": [("lamp.png", images.png(), "image/png", "image/png")],
    "several": [
        ("chair.jpg", images.jpeg((80, 60)), "image/jpeg", "image/jpeg"),
        ("lamp.png", images.png((40, 50)), "image/png", "image/png"),
        ("grey.png", images.png((30, 30), mode="L"), "image/png", "image/png"),
        ("rgba.png", images.png((30, 20), mode="RGBA"), "image/png", "image/png"),
    ],
    # a PNG named .jpg and declared as JPEG is a PNG: judged by content, not name or type
    "png named jpg": [("photo.jpg", images.png(), "image/jpeg", "image/png")],
    "jpeg named png": [("photo.png", images.jpeg(), "image/png", "image/jpeg")],
    "jpeg declared gif": [("pic.jpeg", images.jpeg(), "image/gif", "image/jpeg")],
}


@pytest.mark.parametrize("url", UPLOAD_URLS)
@pytest.mark.parametrize("name", list(SETS))
def test_upload_succeeds_with_every_contract_field(app, client, url, name):
    sent = SETS[name]
    response = upload(client, [(f, data, declared) for f, data, declared, _ in sent], url=url)

    assert response.status_code == 201, response.get_data(as_text=True)  # no redirect either
    assert "Location" not in response.headers
    body = response.get_json()
    assert ID_SHAPES["batch"].fullmatch(body["batch_id"])
    assert ID_SHAPES["job"].fullmatch(body["job_id"])
    assert ID_SHAPES["task"].fullmatch(body["task_id"])
    assert body["total_files"] == len(sent) == len(body["uploaded_files"])
    assert body["status"] == "uploaded"
    assert isinstance(body["message"], str) and body["message"]
    assert body["face_limit"] == 100_000  # the relief default, the default model here
    for entry, (filename, data, _declared, content_type) in zip(
        body["uploaded_files"], sent, strict=True
    ):
        assert set(entry) >= {"file_id", "filename", "file_size", "content_type", "status"}
        assert ID_SHAPES["file"].fullmatch(entry["file_id"])
        assert entry["filename"] == filename
        assert entry["file_size"] == len(data)
        assert entry["content_type"] == content_type
        assert entry["status"] == "uploaded"

    # stored byte for byte under uploads/{batch_id}/, named by file id with the true extension
    stored = images.stored_files(app)
    assert len(stored) == len(sent)
    for entry, (_f, data, _d, content_type) in zip(body["uploaded_files"], sent, strict=True):
        extension = "png" if content_type == "image/png" else "jpg"
        relative = os.path.join(body["batch_id"], f"{entry['file_id']}.{extension}")
        assert relative in stored
        with open(os.path.join(app.instance_path, "uploads", relative), "rb") as handle:
            assert sha(handle.read()) == sha(data)

    # recorded together: one batch, its files, one job with one queued generation per file
    counts = images.row_counts(app)
    assert {k: counts[k] for k in ("batches", "files", "jobs", "generations")} == {
        "batches": 1,
        "files": len(sent),
        "jobs": 1,
        "generations": len(sent),
    }
    job = images.query(app, "SELECT * FROM jobs")[0]
    assert (job["job_id"], job["task_id"], job["batch_id"], job["model_type"]) == (
        body["job_id"],
        body["task_id"],
        body["batch_id"],
        "relief",
    )


def test_phone_jpeg_with_mpf_is_accepted_as_jpeg(app, client):
    # Phones write a JPEG with an MPF second image (depth map, gain map): Pillow names it MPO.
    # It is a JPEG by content (baseline JPEG first frame); refusing it refuses phone photos.
    response = upload(client, [("IMG_0001.JPG", images.mpo(), "image/jpeg")])
    assert response.status_code == 201, response.get_data(as_text=True)
    entry = response.get_json()["uploaded_files"][0]
    assert entry["content_type"] == "image/jpeg"
    lifecycle.get_dispatcher(app).run_due()
    status = client.get(f"/api/v1/upload/status/{entry['file_id']}", headers=bearer(USER_KEY))
    assert status.get_json()["processing_status"] == "completed"


def test_original_filename_is_kept_as_metadata(client):
    body = uploaded(client, [("Mon fauteuil (2).png", images.png())])
    file_id = body["uploaded_files"][0]["file_id"]
    status = client.get(f"/api/v1/upload/status/{file_id}", headers=bearer(USER_KEY))
    assert status.status_code == 200
    assert status.get_json()["filename"] == "Mon fauteuil (2).png"
    assert status.get_json()["batch_id"] == body["batch_id"]


def test_identifiers_are_unguessable(client):
    randoms = {kind: [] for kind in ID_SHAPES}
    started = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    for _ in range(3):
        body = uploaded(client, [("a.png", images.png()), ("b.jpg", images.jpeg())])
        stamp, random_part = ID_SHAPES["batch"].fullmatch(body["batch_id"]).groups()
        moment = datetime.strptime(stamp, "%Y%m%d_%H%M%S")
        local_start = datetime.now().replace(microsecond=0)  # UTC or local time, both fine
        assert any(abs((moment - ref).total_seconds()) < 120 for ref in (started, local_start))
        randoms["batch"].append(random_part)
        randoms["job"].append(ID_SHAPES["job"].fullmatch(body["job_id"]).group(1))
        randoms["task"].append(ID_SHAPES["task"].fullmatch(body["task_id"]).group(1))
        for entry in body["uploaded_files"]:
            randoms["file"].append(ID_SHAPES["file"].fullmatch(entry["file_id"]).group(1))
    for kind, parts in randoms.items():
        assert len(set(parts)) == len(parts), kind
        for part in parts:
            assert random_bits(part) >= 96, (kind, part)
        # random, not a counter or a clock: no two share a long prefix
        for first in parts:
            for second in parts:
                if first is not second:
                    assert len(os.path.commonprefix([first, second])) < 8, (kind, parts)
    assert len(set(randoms["job"]) | set(randoms["task"])) == 6  # task ids are not job ids


# --- content checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(images.BAD_FILES))
def test_file_not_a_decodable_jpeg_or_png_is_refused(app, client, kind):
    bad_name, make = images.BAD_FILES[kind]
    response = upload(client, [("good.png", images.png()), (bad_name, make())])
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert set(detail["details"]["files"]) == {bad_name}  # names the bad one, not the good one
    assert detail["details"]["files"][bad_name]  # with a reason
    images.assert_nothing_stored(app)


def test_every_bad_file_is_named_with_its_reason(app, client):
    sent = [("good.jpg", images.jpeg())] + list(
        (name, make()) for name, make in images.BAD_FILES.values()
    )
    detail = assert_envelope(upload(client, sent), 400, "VALIDATION_ERROR")
    reasons = detail["details"]["files"]
    assert set(reasons) == {name for name, _ in images.BAD_FILES.values()}
    assert "empty" in reasons["empty.png"]
    assert "truncated" in reasons["cut.jpg"] and "truncated" in reasons["cut.png"]
    assert "GIF" in reasons["anim.gif"] and "BMP" in reasons["old.bmp"]
    images.assert_nothing_stored(app)


def test_image_within_pixel_bound_of_default_is_refused_above_it(app, client):
    # 8000 x 8000 = 64 Mpx: above MAX_IMAGE_PIXELS (40 Mpx) but below Pillow's own warning limit
    response = upload(client, [("big.png", images.png_header(8000, 8000))])
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "pixels" in detail["details"]["files"]["big.png"]
    images.assert_nothing_stored(app)


@with_config(MAX_IMAGE_PIXELS=1000)
@pytest.mark.parametrize(("size", "accepted"), [((40, 25), True), ((41, 25), False)])
def test_pixel_limit_is_configurable(app, client, size, accepted):
    response = upload(client, [("img.png", images.png(size))])
    if accepted:
        assert response.status_code == 201
    else:
        detail = assert_envelope(response, 400, "VALIDATION_ERROR")
        assert "1000" in detail["details"]["files"]["img.png"]
        images.assert_nothing_stored(app)


@with_config(MAX_FILE_SIZE=5000)
def test_oversize_file_is_413_and_nothing_stored(app, client):
    big = images.encode(images.noisy((96, 96)), "PNG")
    assert len(big) > 5000
    response = upload(client, [("small.png", images.png((16, 16))), ("big.png", big)])
    detail = assert_envelope(response, 413, "FILE_TOO_LARGE")
    assert detail["details"]["files"] == {"big.png": len(big)}
    images.assert_nothing_stored(app)


@with_config(MAX_FILE_SIZE=5000)
def test_file_of_exactly_max_size_is_accepted(app, client):
    data = images.png((16, 16))
    padded = data + b"\0" * (5000 - len(data))  # bytes after IEND are ignored by decoders
    assert uploaded(client, [("edge.png", padded)])["uploaded_files"][0]["file_size"] == 5000


@with_config(MAX_FILES=1, MAX_FILE_SIZE=1000)
def test_request_beyond_content_length_is_413_in_envelope(app, client):
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (2 * 1024 * 1024)
    response = images.raw_upload(client, [("huge.png", big)])
    assert_envelope(response, 413, "FILE_TOO_LARGE")
    images.assert_nothing_stored(app)


@with_config(MAX_FILES=2)
@pytest.mark.parametrize(("count", "status"), [(2, 201), (3, 400)])
def test_file_count_limit(app, client, count, status):
    response = upload(client, [(f"img{i}.png", images.png()) for i in range(count)])
    if status == 201:
        assert response.status_code == 201
    else:
        detail = assert_envelope(response, 400, "VALIDATION_ERROR")
        assert detail["details"]["max_files"] == 2
        images.assert_nothing_stored(app)


@pytest.mark.parametrize(
    "request_args",
    [
        {"data": {}, "content_type": "multipart/form-data"},
        {"data": {"face_limit": "1000"}, "content_type": "multipart/form-data"},
        {"data": {"file": [(io.BytesIO(images.png()), "a.png")]}},
        {"json": {"files": ["a.png"]}},
        {"data": b"\x89PNG", "content_type": "image/png"},
    ],
    ids=["empty form", "only face_limit", "wrong field name", "json", "raw body"],
)
def test_no_files_is_400(app, client, request_args):
    response = client.post(images.UPLOAD_URL, headers=bearer(USER_KEY), **request_args)
    assert_envelope(response, 400, "VALIDATION_ERROR")
    images.assert_nothing_stored(app)


# --- all or nothing when storing fails ---------------------------------------------------------


def test_failure_while_recording_leaves_nothing(app, client, monkeypatch):
    def broken_insert(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(jobs, "insert_job", broken_insert)
    response = upload(client, [("a.png", images.png()), ("b.png", images.png())])
    assert_envelope(response, 500, "PROCESSING_ERROR")
    images.assert_nothing_stored(app)


def test_failure_while_writing_second_file_leaves_nothing(app, client, monkeypatch):
    real_write, writes = storage.atomic_write, []

    def failing_write(path, write):
        writes.append(path)
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return real_write(path, write)

    monkeypatch.setattr(storage, "atomic_write", failing_write)
    response = upload(client, [("a.png", images.png()), ("b.png", images.png())])
    assert_envelope(response, 500, "PROCESSING_ERROR")
    assert len(writes) == 2
    images.assert_nothing_stored(app)


# --- options ------------------------------------------------------------------------------------

MODELS = [
    pytest.param({}, "relief", id="relief"),
    pytest.param(FAL, "tripo3d", id="tripo3d"),
]


@pytest.mark.parametrize(("app_config", "model_type"), MODELS, indirect=["app_config"])
@pytest.mark.parametrize(
    "face_limit", ["abc", "-1", "0", "99", "1.5", "10000000000", "nan", "1e999", "5 000"]
)
def test_bad_face_limit_is_400(app, client, model_type, face_limit):
    response = upload(
        client, [("a.png", images.png())], model_type=model_type, face_limit=face_limit
    )
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "face_limit" in detail["details"]
    images.assert_nothing_stored(app)


@pytest.mark.parametrize(("app_config", "model_type"), MODELS, indirect=["app_config"])
@pytest.mark.parametrize("face_limit", [100, 5000, 500_000])
def test_valid_face_limit_is_echoed_and_stored(app, client, model_type, face_limit):
    body = uploaded(
        client, [("a.png", images.png())], model_type=model_type, face_limit=str(face_limit)
    )
    assert body["face_limit"] == face_limit
    assert images.job_options(app, body["job_id"])["face_limit"] == face_limit
    assert images.query(app, "SELECT model_type FROM jobs")[0][0] == model_type


@with_config(**FAL)
def test_default_model_is_tripo3d_when_a_fal_key_is_set(app, client):
    body = uploaded(client, [("a.png", images.png())])
    assert images.query(app, "SELECT model_type FROM jobs")[0][0] == "tripo3d"
    assert body["face_limit"] is None
    assert images.job_options(app, body["job_id"]) == {"texture": "standard"}


@pytest.mark.parametrize("model_type", ["Tripo3D", "RELIEF", "blender", "relief ", "none"])
def test_unknown_model_type_is_400(app, client, model_type):
    response = upload(client, [("a.png", images.png())], model_type=model_type)
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert set(detail["details"]["allowed"]) == {"tripo3d", "relief"}
    images.assert_nothing_stored(app)


def test_tripo3d_without_fal_key_is_refused_never_switched(app, client):
    response = upload(client, [("a.png", images.png())], model_type="tripo3d")
    assert 400 <= response.status_code < 500
    detail = assert_envelope(response, response.status_code, "VALIDATION_ERROR")
    assert "FAL_KEY" in detail["message"]
    assert detail["details"]["model_type"] == "tripo3d"
    images.assert_nothing_stored(app)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width_mm", "0"),
        ("width_mm", "abc"),
        ("width_mm", "5000"),
        ("width_mm", "inf"),
        ("depth_mm", "0"),
        ("depth_mm", "500"),
        ("depth_mm", "-1"),
        ("base_mm", "0.1"),
        ("base_mm", "x"),
        ("invert", "maybe"),
        ("invert", "2"),
    ],
)
def test_bad_relief_option_is_400(app, client, field, value):
    response = upload(client, [("a.png", images.png())], model_type="relief", **{field: value})
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert field in detail["details"]
    images.assert_nothing_stored(app)


def test_relief_options_are_stored_with_the_job(app, client):
    body = uploaded(
        client,
        [("a.png", images.png())],
        width_mm="150",
        depth_mm="3.5",
        base_mm="1",
        invert="true",
        face_limit="20000",
        texture_enabled="false",
    )
    assert images.job_options(app, body["job_id"]) == {
        "face_limit": 20000,
        "width_mm": 150.0,
        "depth_mm": 3.5,
        "base_mm": 1.0,
        "invert": True,
        "textured": False,
    }


# --- file names with directory parts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent_name", "kept_name"),
    [
        ("../../evil.png", "evil.png"),
        ("..\\..\\evil.png", "evil.png"),
        ("C:\\x\\y.png", "y.png"),
        ("/etc/cron.d/evil.png", "evil.png"),
        ("uploads/../../../evil.png", "evil.png"),
        ("dir/", "image-1"),
        ("a\x00b.png", "ab.png"),
        ("tab\there.png", "tabhere.png"),
        ("\u202egnp.evil", "gnp.evil"),
        ("\x00\x01", "image-1"),
        ("line\u2028break.png", "linebreak.png"),
        ("\u0645\u06cc\u200c\u0631\u0648\u062f.png", "\u0645\u06cc\u200c\u0631\u0648\u062f.png"),
    ],
)
def test_filename_with_path_parts_is_kept_by_basename_only(
    app, client, tmp_path, sent_name, kept_name
):
    response = images.raw_upload(client, [(sent_name, images.png())])
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    entry = body["uploaded_files"][0]
    assert entry["filename"] == kept_name
    status = client.get(f"/api/v1/upload/status/{entry['file_id']}", headers=bearer(USER_KEY))
    assert status.get_json()["filename"] == kept_name
    assert images.stored_files(app) == [os.path.join(body["batch_id"], f"{entry['file_id']}.png")]
    # nothing anywhere in the test's folder carries the client's name
    everything = [name for _root, _dirs, names in os.walk(tmp_path) for name in names]
    assert not [name for name in everything if "evil" in name or name == "y.png"]


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_upload_needs_a_key(app, client, key):
    response = upload(client, [("a.png", images.png())], key=key)
    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")
    images.assert_nothing_stored(app)


# --- file and batch status ----------------------------------------------------------------------


def test_file_and_batch_status_before_and_after_generation(app, client):
    body = uploaded(client, [("a.png", images.png()), ("b.jpg", images.jpeg())])
    headers = bearer(USER_KEY)
    file_ids = [entry["file_id"] for entry in body["uploaded_files"]]

    for file_id in file_ids:
        status = client.get(f"/api/v1/upload/status/{file_id}", headers=headers).get_json()
        assert status["file_id"] == file_id
        assert status["status"] == "uploaded"
        assert status["processing_status"] in ("pending", "queued")
        assert status["progress"] == 0
        assert status["job_id"] == body["job_id"]
    batch = client.get(f"/api/v1/upload/batch/{body['batch_id']}/status", headers=headers)
    assert batch.status_code == 200
    assert batch.get_json() == {
        "batch_id": body["batch_id"],
        "status": "queued",
        "total_files": 2,
        "completed_files": 0,
        "failed_files": 0,
        "progress": 0,
    }

    lifecycle.get_dispatcher(app).run_due()

    for file_id in file_ids:
        status = client.get(f"/api/v1/upload/status/{file_id}", headers=headers).get_json()
        assert status["processing_status"] == "completed"
        assert status["progress"] == 100
    batch = client.get(f"/api/v1/upload/batch/{body['batch_id']}/status", headers=headers)
    assert batch.get_json() == {
        "batch_id": body["batch_id"],
        "status": "completed",
        "total_files": 2,
        "completed_files": 2,
        "failed_files": 0,
        "progress": 100,
    }


def test_batch_status_counts_a_failed_file(app, client):
    body = images.uploaded_with_ghosts(
        client, [("a.png", images.png()), ("ghost.png", images.transparent_png())]
    )
    lifecycle.get_dispatcher(app).run_due()
    batch = client.get(
        f"/api/v1/upload/batch/{body['batch_id']}/status", headers=bearer(USER_KEY)
    ).get_json()
    assert (batch["total_files"], batch["completed_files"], batch["failed_files"]) == (2, 1, 1)
    ghost = body["uploaded_files"][1]["file_id"]
    status = client.get(f"/api/v1/upload/status/{ghost}", headers=bearer(USER_KEY)).get_json()
    assert status["processing_status"] == "failed"


@pytest.mark.parametrize(
    ("key", "status"), [(USER_KEY, 200), (OTHER_KEY, 404), (ADMIN_KEY, 200), (None, 401)]
)
def test_status_belongs_to_the_uploading_key(client, key, status):
    body = uploaded(client, [("a.png", images.png())])
    headers = bearer(key) if key else {}
    urls = [
        f"/api/v1/upload/status/{body['uploaded_files'][0]['file_id']}",
        f"/api/v1/upload/batch/{body['batch_id']}/status",
    ]
    for url in urls:
        response = client.get(url, headers=headers)
        if status == 200:
            assert response.status_code == 200
        else:
            assert_envelope(
                response, status, "NOT_FOUND" if status == 404 else "AUTHENTICATION_REQUIRED"
            )


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/upload/status/file_000000000000000000000000",
        "/api/v1/upload/batch/batch_20240101_000000_000000000000000000000000/status",
    ],
)
def test_unknown_file_or_batch_is_404(client, url):
    assert_envelope(client.get(url, headers=bearer(ADMIN_KEY)), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("ghost.png", lambda: images.transparent_png()),
        ("dot.png", lambda: images.encode(Image.new("RGB", (1, 1)), "PNG")),
    ],
)
def test_relief_refuses_images_it_cannot_build_at_upload(app, client, name, make):
    response = upload(client, [("ok.png", images.png()), (name, make())], model_type="relief")
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert set(detail["details"]["files"]) == {name}
    assert detail["details"]["model_type"] == "relief"
    images.assert_nothing_stored(app)
