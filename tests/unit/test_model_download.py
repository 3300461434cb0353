"""`/models/download/{job_id}`: each format converted on the pool, cached, and round-tripped."""

import io
import os
import threading
import zipfile

import numpy as np
import pytest
import trimesh

from image2model.models3d import convert
from image2model.pipeline import lifecycle
from tests.helpers import (
    assert_envelope,
    completed_job,
    embedded_image,
    execute,
    faces_of,
    get,
    glb_with_document,
    upload,
)
from tests.live_server import wait_until

SUFFIXES = {"glb": ".glb", "obj": ".obj.zip", "ply": ".ply", "stl": ".stl"}


@pytest.fixture
def job(app, client):
    return completed_job(app, client)


@pytest.mark.parametrize("fmt", sorted(convert.FORMATS))
def test_each_format_round_trips_with_the_glb_face_count(client, job, fmt, tmp_path):
    response = get(client, f"/api/v1/models/download/{job['job_id']}?format={fmt}")
    assert response.status_code == 200
    assert response.mimetype == convert.FORMATS[fmt][1]
    assert response.headers["Content-Disposition"] == f"attachment; filename=chair{SUFFIXES[fmt]}"
    downloaded = tmp_path / f"download.{convert.FORMATS[fmt][0]}"
    downloaded.write_bytes(response.data)
    assert faces_of(downloaded) == convert.verify_glb(job["dir"] / "chair.glb").faces


def test_obj_is_the_default_and_its_zip_holds_the_texture(client, job, tmp_path):
    response = get(client, f"/api/v1/models/download/{job['job_id']}")
    assert response.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        # the relief generator stores its texture as JPEG, and the ZIP keeps those very bytes
        assert sorted(archive.namelist()) == ["chair.jpg", "chair.mtl", "chair.obj"]
        assert "map_Kd chair.jpg" in archive.read("chair.mtl").decode()
        glb_bytes = (job["dir"] / "chair.glb").read_bytes()
        assert archive.read("chair.jpg") == embedded_image(glb_bytes, 0)
        archive.extractall(tmp_path)
    mesh = trimesh.load_scene(tmp_path / "chair.obj").to_mesh()
    assert mesh.visual.material.image is not None


@pytest.mark.parametrize("units, per_metre", [(None, 1000), ("cm", 100), ("in", 1000 / 25.4)])
def test_stl_is_in_millimetres_unless_units_say_otherwise(client, job, tmp_path, units, per_metre):
    query = f"format=stl&units={units}" if units else "format=stl"
    stl = tmp_path / "model.stl"
    stl.write_bytes(get(client, f"/api/v1/models/download/{job['job_id']}?{query}").data)
    glb_extents = trimesh.load_scene(job["dir"] / "chair.glb").extents
    np.testing.assert_allclose(trimesh.load_mesh(stl).extents, glb_extents * per_metre, rtol=1e-5)


@pytest.mark.parametrize("query", ["format=fbx", "format=OBJ", "format=stl&units=km", "units=mm2"])
def test_bad_format_or_units_is_400(client, job, query):
    response = get(client, f"/api/v1/models/download/{job['job_id']}?{query}")
    assert_envelope(response, 400, "VALIDATION_ERROR")


def test_second_request_is_served_from_the_cache(client, job, monkeypatch):
    calls = []
    original = convert.convert_glb
    monkeypatch.setattr(
        convert, "convert_glb", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    url = f"/api/v1/models/download/{job['job_id']}?format=ply"
    first = get(client, url)
    cache = job["dir"] / ".cache" / "chair.ply.ply"
    before = cache.stat()
    second = get(client, url)
    after = cache.stat()
    assert len(calls) == 1
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert second.data == first.data and second.headers["ETag"] == first.headers["ETag"]
    assert get(client, url, **{"If-None-Match": first.headers["ETag"]}).status_code == 304


def test_a_replaced_glb_is_converted_again(client, job):
    url = f"/api/v1/models/download/{job['job_id']}?format=stl&units=m"
    first = get(client, url).data
    glb = job["dir"] / "chair.glb"
    glb.write_bytes(trimesh.creation.box().export(file_type="glb"))
    os.utime(glb, ns=(glb.stat().st_atime_ns, glb.stat().st_mtime_ns + 10**9))
    second = get(client, url).data
    assert second != first and len(second) == 84 + 50 * 12  # a binary STL of 12 triangles


def test_a_failed_conversion_leaves_no_cache_file(client, job, monkeypatch):
    def half_then_fail(glb_path, fmt, out_file, **options):
        out_file.write(b"half an archive")
        raise RuntimeError("disk full")

    monkeypatch.setattr(convert, "convert_glb", half_then_fail)
    response = get(client, f"/api/v1/models/download/{job['job_id']}?format=obj")
    assert_envelope(response, 500, "PROCESSING_ERROR")
    assert os.listdir(job["dir"] / ".cache") == []
    monkeypatch.undo()
    assert get(client, f"/api/v1/models/download/{job['job_id']}?format=obj").status_code == 200
    assert os.listdir(job["dir"] / ".cache") == ["chair.obj.zip"]


@pytest.mark.parametrize("extension", ["KHR_draco_mesh_compression", "EXT_meshopt_compression"])
def test_a_glb_needing_an_undecodable_extension_is_422(client, job, extension):
    def require(document):
        document["extensionsUsed"] = document["extensionsRequired"] = [extension]

    glb = job["dir"] / "chair.glb"
    glb.write_bytes(glb_with_document(glb.read_bytes(), require))
    response = get(client, f"/api/v1/models/download/{job['job_id']}?format=obj")
    detail = assert_envelope(response, 422, "UNSUPPORTED_MODEL")
    assert detail["details"]["extensions"] == [extension] and extension in detail["message"]
    assert os.listdir(job["dir"] / ".cache") == []
    # the GLB itself is still what the generator stored
    as_glb = get(client, f"/api/v1/models/download/{job['job_id']}?format=glb")
    assert as_glb.status_code == 200 and as_glb.data == glb.read_bytes()


def test_a_corrupt_glb_is_422_not_a_broken_file(client, job):
    (job["dir"] / "chair.glb").write_bytes(b"glTF" + b"\0" * 40)
    response = get(client, f"/api/v1/models/download/{job['job_id']}?format=stl")
    assert_envelope(response, 422, "INVALID_MODEL")


@pytest.fixture
def pooled(app_config):
    """Give the app a real worker pool of two threads."""
    app_config["POOL_SIZE"] = 2


def test_conversion_runs_once_on_the_pool_for_concurrent_requests(pooled, app, monkeypatch):
    client = app.test_client()
    job = upload(client, ["chair.png"])

    def completed():
        status = get(client, f"/api/v1/models/job/{job['job_id']}").get_json()["status"]
        return status == "completed"

    wait_until(completed, 30, message="the relief job")
    threads = []
    another_started = threading.Event()
    original = convert.convert_glb

    def slow_convert(*args, **options):
        threads.append(threading.current_thread().name)
        if len(threads) > 1:
            another_started.set()
        # hold the first conversion open long enough for a second one to start, if one could
        another_started.wait(timeout=0.5)
        return original(*args, **options)

    monkeypatch.setattr(convert, "convert_glb", slow_convert)
    url = f"/api/v1/models/download/{job['job_id']}?format=ply"
    statuses = []
    requests = [
        threading.Thread(target=lambda: statuses.append(get(app.test_client(), url).status_code))
        for _ in range(4)
    ]
    for request in requests:
        request.start()
    for request in requests:
        request.join()
    assert statuses == [200] * 4
    assert len(threads) == 1 and threads[0].startswith("image2model-pool")


def test_file_id_chooses_a_generation_of_a_multi_file_job(app, client):
    job = upload(client, ["chair.png", "blank.png", "table.png"])
    chair, blank, table = (entry["file_id"] for entry in job["uploaded_files"])
    execute(app, "UPDATE generations SET state = 'failed' WHERE file_id = ?", blank)
    lifecycle.get_dispatcher(app).run_due()
    base = f"/api/v1/models/download/{job['job_id']}?format=stl"
    # Two models and no choice: a 409 that names them, never the first one in silence.
    ambiguous = assert_envelope(get(client, base), 409, "CONFLICT")["details"]["files"]
    assert [(f["file_id"], f["filename"]) for f in ambiguous] == [
        (chair, "chair.png"),
        (table, "table.png"),
    ]
    assert ambiguous[1]["download_url"] == f"{base.split('?')[0]}?file_id={table}&format=stl"
    assert get(client, ambiguous[1]["download_url"]).status_code == 200
    chosen_by_name = get(client, f"{base}&file=chair.png")
    assert chosen_by_name.headers["Content-Disposition"] == "attachment; filename=chair.stl"
    assert_envelope(get(client, f"{base}&file=lamp.png"), 404, "NOT_FOUND")
    unknown = assert_envelope(get(client, f"{base}&fiel=chair.png"), 400, "VALIDATION_ERROR")
    assert unknown["details"]["unknown"] == ["fiel"]
    assert_envelope(
        get(client, f"/api/v1/download/{job['job_id']}/chair.glb?file=x"), 400, "VALIDATION_ERROR"
    )
    table_response = get(client, f"{base}&file_id={table}")
    assert table_response.headers["Content-Disposition"] == "attachment; filename=table.stl"
    detail = assert_envelope(get(client, f"{base}&file_id={blank}"), 409, "CONFLICT")
    assert detail["details"]["status"] == "failed"
    assert_envelope(get(client, f"{base}&file_id=file_nope"), 404, "NOT_FOUND")
    listed = get(client, f"/api/v1/download/{job['job_id']}/all").get_json()
    assert [entry["filename"] for entry in listed["files"]] == [
        "chair.glb",
        "chair.preview.png",
        "table.glb",
        "table.preview.png",
    ]
    assert_envelope(get(client, f"/api/v1/download/{job['job_id']}/blank.glb"), 409, "CONFLICT")
