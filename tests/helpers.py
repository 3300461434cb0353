"""What many test modules share: envelope checks, jobs in a known state, held steps, GLBs."""

import dataclasses
import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from image2model import generators
from image2model.pipeline import lifecycle
from image2model.store import db
from tests import images
from tests.conftest import USER_KEY, bearer

JSON_CHUNK = 0x4E4F534A  # a GLB chunk's type: JSON


def assert_envelope(response, status, code):
    """Check status, JSON content type and the `{"detail": {code, message, details}}` shape."""
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"detail"}
    assert set(body["detail"]) == {"code", "message", "details"}
    assert body["detail"]["code"] == code
    assert isinstance(body["detail"]["message"], str) and body["detail"]["message"]
    assert isinstance(body["detail"]["details"], dict)
    return body["detail"]


def generation_rows(app):
    """Return every generation row."""
    return images.query(app, "SELECT * FROM generations ORDER BY id")


def set_columns(app, **columns):
    """Set columns on every generation."""
    conn = db.connect(db.database_path(app))
    try:
        with db.transaction(conn):
            assignments = ", ".join(f"{name} = ?" for name in columns)
            conn.execute(f"UPDATE generations SET {assignments}", tuple(columns.values()))
    finally:
        conn.close()


def replace_step(monkeypatch, name, step):
    """Run `step` instead of the named generator's own, for this test."""
    generator = generators.REGISTRY[name]
    monkeypatch.setitem(generators.REGISTRY, name, dataclasses.replace(generator, step=step))


def held_step(monkeypatch, outcomes):
    """Replace the tripo3d step with one that acts out `outcomes` in turn; return its runs."""

    runs = []

    def step(run):
        runs.append(run.id)
        outcomes[len(runs) - 1](run)

    replace_step(monkeypatch, "tripo3d", step)
    return runs


def poll_later(run):
    """Ask for another poll an hour from now, changing nothing else."""
    run.poll_again(3600)


def end_as_failed(run):
    """End the generation."""
    run.transition("failed", error_code="FAL_API_ERROR", error_message="ended")


def queued_job(client, name="chair.png", key=USER_KEY):
    """Upload one relief image and leave its generation queued; return the upload body."""
    return images.uploaded(client, [(name, images.png())], key=key, model_type="relief")


def finished_job(app, client, name="chair.png", key=USER_KEY):
    """Upload one relief image and run it to completion inline; return the upload body."""
    body = queued_job(client, name, key)
    lifecycle.get_dispatcher(app).run_due()
    assert job_states(app, body["job_id"]) == ["completed"]
    return body


def job_states(app, job_id):
    """Return the states of a job's generations."""
    rows = images.query(app, "SELECT state FROM generations WHERE job_id = ? ORDER BY id", job_id)
    return [row[0] for row in rows]


def image_bytes(seed=0):
    """Return a small noisy PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    return encoded.getvalue()


def upload(client, names, key=USER_KEY):
    """Upload images as one relief job; return the upload body."""
    files = [(io.BytesIO(image_bytes(index)), name) for index, name in enumerate(names)]
    response = client.post(
        "/api/v1/upload/",
        data={"files": files, "model_type": "relief", "face_limit": "2000"},
        headers=bearer(key),
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.data
    return response.get_json()


def completed_job(app, client, names=("chair.png",), key=USER_KEY):
    """Upload and run a relief job; return its upload body plus its results folder."""
    body = upload(client, names, key)
    lifecycle.get_dispatcher(app).run_due()
    return {**body, "dir": Path(app.instance_path, "results", body["job_id"])}


def get(client, path, key=USER_KEY, **headers):
    """GET with the body read and the response closed, so no stored file stays open."""
    auth = bearer(key) if key else {}
    return client.get(path, headers={**auth, **headers}, buffered=True)


def execute(app, statement, *arguments):
    """Change the store the way another process would."""
    conn = db.connect(db.database_path(app))
    try:
        with db.transaction(conn):
            conn.execute(statement, arguments)
    finally:
        conn.close()


def load_converted(out_path, tmp_path):
    """Load a converted file back with trimesh; an OBJ zip is extracted first."""
    if out_path.suffix == ".zip":
        folder = tmp_path / "unzipped"
        with zipfile.ZipFile(out_path) as archive:
            archive.extractall(folder)
            obj_name = next(n for n in archive.namelist() if n.endswith(".obj"))
        return trimesh.load_scene(folder / obj_name)
    return trimesh.load_scene(out_path)


def glb_with_json(glb_bytes, json_bytes):
    """Return the GLB with its JSON chunk replaced, padding and length fields kept right."""
    json_length = struct.unpack_from("<I", glb_bytes, 12)[0]
    json_bytes += b" " * (-len(json_bytes) % 4)
    body = struct.pack("<II", len(json_bytes), JSON_CHUNK) + json_bytes
    body += glb_bytes[20 + json_length :]
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def glb_with_document(glb_bytes, change):
    """Return the GLB with change applied to its parsed JSON document."""
    json_length = struct.unpack_from("<I", glb_bytes, 12)[0]
    document = json.loads(glb_bytes[20 : 20 + json_length])
    change(document)
    return glb_with_json(glb_bytes, json.dumps(document).encode())


def embedded_image(glb_bytes, index):
    """Return the bytes of an image stored in a GLB's binary chunk."""
    json_length = struct.unpack_from("<I", glb_bytes, 12)[0]
    document = json.loads(glb_bytes[20 : 20 + json_length])
    view = document["bufferViews"][document["images"][index]["bufferView"]]
    start = 20 + json_length + 8 + view.get("byteOffset", 0)
    return glb_bytes[start : start + view["byteLength"]]


def faces_of(path):
    """Return the triangles of a GLB, OBJ zip, PLY or STL file, every node placed."""
    return len(load_converted(path, path.parent).to_mesh().faces)
