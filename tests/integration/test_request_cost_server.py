"""The real server logs every request it answered, health probes and limited routes alike."""

import json

import pytest

from tests.live_server import LiveServer
from tests.pipeline_helpers import USER_KEY as LIVE_KEY
from tests.pipeline_helpers import Client

pytestmark = pytest.mark.integration

LIMITED = "/api/v1/models/available"


def test_the_real_server_logs_every_request_by_the_time_it_has_stopped(tmp_path):
    env = {"IMAGE2MODEL_API_KEYS": LIVE_KEY, "IMAGE2MODEL_RATELIMIT_DEFAULT": "10000 per minute"}
    server = LiveServer(tmp_path / "instance", env=env).start()
    try:
        client = Client(server, LIVE_KEY)
        statuses = [client.get("/api/v1/health/").status_code for _ in range(20)]
        statuses += [client.get(LIMITED).status_code for _ in range(10)]
        assert statuses == [200] * 30
    finally:
        server.stop()
    with open(server.instance_path / "logs" / "access.log", encoding="utf-8") as handle:
        logged = [json.loads(line)["route"] for line in handle if line.strip()]
    assert logged.count("/api/v1/health/") == 20 and logged.count(LIMITED) == 10
