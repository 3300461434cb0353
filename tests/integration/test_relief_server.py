"""Integration: out of the box (no FAL key), the real server builds reliefs offline."""

import io

import numpy as np
import pytest
import requests
import trimesh
from PIL import Image, ImageDraw

from tests.live_server import LiveServer
from tests.pipeline_helpers import USER_KEY, Client

pytestmark = pytest.mark.integration


def disc_png():
    """Return an RGBA PNG: an opaque shaded disc on a transparent background."""
    image = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((10, 10, 110, 110), fill=(200, 120, 60, 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_relief_is_the_default_and_builds_a_solid(tmp_path, monkeypatch):
    monkeypatch.delenv("FAL_KEY", raising=False)
    server = LiveServer(tmp_path / "instance", env={"IMAGE2MODEL_API_KEYS": USER_KEY}).start()
    try:
        client = Client(server)
        models = {m["type"]: m for m in client.get("/api/v1/models/available").json()}
        assert models["relief"]["default"] and models["relief"]["available"]
        assert not models["tripo3d"]["available"]

        upload = client.upload(
            [("disc.png", disc_png())], face_limit="4000", width_mm="80", depth_mm="4", base_mm="2"
        )
        assert upload["model_type"] == "relief"
        job = client.wait_job(upload["job_id"], timeout=30)
        events, _ = client.stream(upload["task_id"], timeout=10)
    finally:
        server.stop()

    assert job["status"] == "completed"
    assert job["model_url"] == f"/api/v1/download/{upload['job_id']}/disc.glb"
    results = server.instance_path / "results" / upload["job_id"]
    mesh = trimesh.load(results / "disc.glb", file_type="glb", force="mesh")
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert len(mesh.faces) <= 4000
    extents = mesh.bounds[1] - mesh.bounds[0]
    assert np.allclose(extents[2], 0.006, atol=1e-4)  # base + depth, in metres
    assert extents[0] < 0.08  # the disc is narrower than the whole image
    with Image.open(results / "disc.preview.png") as preview:
        assert preview.format == "PNG"
    messages = [p["message"] for _, p in events if p["type"] == "log"]
    assert messages == [
        "decoding image",
        "building mesh",
        "applying texture",
        "writing GLB and preview",
    ]
    assert events[-1][1]["type"] == "completed"


def test_tripo3d_without_fal_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("FAL_KEY", raising=False)
    server = LiveServer(tmp_path / "instance", env={"IMAGE2MODEL_API_KEYS": USER_KEY}).start()
    try:
        client = Client(server)
        response = client.get("/api/v1/models/available")
        assert response.status_code == 200
        refused = requests.post(
            server.url("/api/v1/upload/"),
            headers=client.headers,
            files=[("files", ("a.png", disc_png(), "image/png"))],
            data={"model_type": "tripo3d"},
            timeout=10,
        )
    finally:
        server.stop()
    assert refused.status_code == 400
    assert refused.json()["detail"]["details"]["model_type"] == "tripo3d"
    assert not list((server.instance_path / "uploads").glob("*/*"))
