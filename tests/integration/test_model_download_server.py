"""Model downloads over HTTP from the real server: each format, ranges, ETags, paths kept inside."""

import http.client
import json

import pytest
import requests

from image2model.models3d import convert
from tests.conftest import USER_KEY
from tests.helpers import faces_of, image_bytes
from tests.live_server import LiveServer, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path):
    """Start the real server (`make run`) with a known key."""
    live = LiveServer(tmp_path / "instance", env={"IMAGE2MODEL_API_KEYS": USER_KEY}).start()
    yield live
    live.stop()


def test_over_http_formats_round_trip_and_paths_stay_inside(server, tmp_path):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {USER_KEY}"
    response = session.post(
        server.url("/api/v1/upload/"),
        files={"files": ("chair.png", image_bytes(), "image/png")},
        data={"model_type": "relief", "face_limit": "2000"},
        timeout=10,
    )
    job_id = response.json()["job_id"]
    status = server.url(f"/api/v1/models/job/{job_id}")
    wait_until(lambda: session.get(status, timeout=5).json()["status"] == "completed", 30)
    glb = server.instance_path / "results" / job_id / "chair.glb"
    for fmt in convert.FORMATS:
        url = server.url(f"/api/v1/models/download/{job_id}?format={fmt}")
        whole = session.get(url, timeout=30)
        downloaded = tmp_path / f"download-{fmt}.{convert.FORMATS[fmt][0]}"
        downloaded.write_bytes(whole.content)
        assert faces_of(downloaded) == convert.verify_glb(glb).faces
        part = session.get(url, headers={"Range": "bytes=4-11"}, timeout=5)
        assert part.status_code == 206 and part.content == whole.content[4:12]
        again = session.get(url, headers={"If-None-Match": whole.headers["ETag"]}, timeout=5)
        assert again.status_code == 304
    # http.client sends the path as written: no client-side removal of dot segments
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for path in (
        f"/api/v1/download/{job_id}/..%2f..%2fimage2model.sqlite3",
        f"/api/v1/download/{job_id}/../../image2model.sqlite3",
        f"/api/v1/download/{job_id}/%2e%2e",
        "/api/v1/download/direct/..%5c..%5cimage2model.sqlite3",
        f"/api/v1/models/download/{job_id}%2f..%2f..",
    ):
        connection.request("GET", path, headers={"Authorization": f"Bearer {USER_KEY}"})
        answer = connection.getresponse()
        body = answer.read()
        assert answer.status in (400, 404), (path, answer.status)
        assert json.loads(body)["detail"]["code"] in ("VALIDATION_ERROR", "NOT_FOUND")
    connection.close()
