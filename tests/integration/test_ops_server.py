"""Integration: the real server (`make run`) writes its structured logs, with route templates and
key names and never a secret, and answers the operations endpoints about them."""

import json
import os
import time

import pytest
import requests

from tests.live_server import LiveServer, wait_until
from tests.pipeline_helpers import ADMIN_KEY, OTHER_KEY, USER_KEY, Client, png_bytes

pytestmark = pytest.mark.integration

FAL_KEY = "live-fal-id-3344:live-fal-secret-77aa99"
STRANGER = "stranger-token-0011223344"


@pytest.fixture
def server(tmp_path):
    """Start `make run` with keys, a FAL key and jobs that time out at once (worker warnings)."""
    env = {
        "IMAGE2MODEL_API_KEYS": f"{USER_KEY},{OTHER_KEY}",
        "IMAGE2MODEL_ADMIN_API_KEY": ADMIN_KEY,
        "FAL_KEY": FAL_KEY,
        "IMAGE2MODEL_JOB_TIMEOUT": "0",
        "IMAGE2MODEL_RATELIMIT_DEFAULT": "10000 per minute",
    }
    live = LiveServer(tmp_path / "instance", env=env).start()
    yield live
    live.stop()


def read_log(server, name):
    """Return the parsed entries of one of the server's log files."""
    path = server.instance_path / "logs" / name
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_real_requests_land_in_the_logs_without_secrets(server):
    user, admin = Client(server, USER_KEY), Client(server, ADMIN_KEY)
    assert user.get("/api/v1/models/available").status_code == 200
    assert user.get("/api/v1/models/job/job_0123456789abcdef01234567").status_code == 404
    stranger = requests.get(
        server.url("/api/v1/models/available"),
        headers={"Authorization": f"Bearer {STRANGER}"},
        timeout=10,
    )
    assert stranger.status_code == 401
    upload = user.upload([("chair.png", png_bytes(1))], model_type="relief")
    assert user.wait_job(upload["job_id"])["status"] == "failed"  # timed out at once

    def access_entries():
        entries = read_log(server, "access.log")
        return entries if any(e["route"] == "/api/v1/upload/" for e in entries) else None

    entries = wait_until(access_entries, 10, message="the upload in the access log")
    by_route = {(e["route"], e["status"]): e for e in entries}
    assert by_route[("/api/v1/models/job/<job_id>", 404)]["key_name"] == "env-1"
    assert by_route[("/api/v1/models/available", 401)]["key_name"] is None
    assert by_route[("/api/v1/upload/", 201)]["method"] == "POST"
    assert all(isinstance(e["duration_ms"], float) for e in entries)
    warnings = read_log(server, "worker_errors.log")
    assert any("timed out" in e["message"] for e in warnings)
    assert all(e["logger"].startswith("image2model.") for e in read_log(server, "worker.log"))

    analysis = admin.get("/api/v1/logs/analyze?log_type=celery_errors&hours_back=1").json()
    assert analysis["log_type"] == "worker_errors" and analysis["log_levels"]["WARNING"] >= 1
    assert analysis["request_patterns"]["/api/v1/models/job/<job_id>"] >= 1
    health = admin.get("/api/v1/logs/health").json()
    assert health["status"] == "healthy" and health["rotation_working"] is True
    system = admin.get("/api/v1/admin/system-health").json()
    assert system["retention"]["enabled"] is True

    texts = [server.log()]
    for root, _dirs, names in os.walk(server.instance_path / "logs"):
        for name in names:
            with open(os.path.join(root, name), encoding="utf-8") as handle:
                texts.append(handle.read())
    for secret in (USER_KEY, OTHER_KEY, ADMIN_KEY, FAL_KEY, *FAL_KEY.split(":"), STRANGER):
        assert not any(secret in text for text in texts), secret


def test_log_export_runs_in_the_background_of_the_real_server(server):
    user, admin = Client(server, USER_KEY), Client(server, ADMIN_KEY)
    assert user.get("/api/v1/models/available").status_code == 200
    wait_until(
        lambda: any(
            e["route"] == "/api/v1/models/available" for e in read_log(server, "access.log")
        ),
        10,
        message="the request in the access log",
    )
    today = time.strftime("%Y-%m-%d", time.gmtime())
    query = f"start_date={today}&end_date={today}&log_types=access&format=json"
    started = requests.post(
        server.url(f"/api/v1/logs/export?{query}"), headers=admin.headers, timeout=10
    )
    assert started.status_code == 202, started.text
    status_url = started.json()["status_url"]

    def finished():
        status = admin.get(status_url).json()
        return status if status["status"] in ("completed", "failed") else None

    assert wait_until(finished, 20, message="the export to finish")["status"] == "completed"
    download = admin.get(started.json()["download_url"])
    assert download.status_code == 200
    assert any(e["route"] == "/api/v1/models/available" for e in download.json()["entries"])
    # The finished export no longer holds the one-at-a-time lock.
    again = requests.post(
        server.url(f"/api/v1/logs/export?{query}"), headers=admin.headers, timeout=10
    )
    assert again.status_code == 202, again.text
