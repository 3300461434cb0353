"""Rate limits: per key (per client address without one), headers on every response, 429."""

import threading
import time

import pytest

from image2model import create_app
from image2model.web.limits import SweptMemoryStorage
from tests.conftest import OTHER_KEY, USER_KEY, bearer
from tests.live_server import wait_until

ENDPOINT = "/api/v1/models/available"


@pytest.fixture
def app_config(app_config):
    """Allow three requests per minute."""
    return {**app_config, "RATELIMIT_DEFAULT": "3 per minute"}


def test_headers_on_allowed_responses(client):
    response = client.get(ENDPOINT, headers=bearer(USER_KEY))
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "2"
    assert int(response.headers["X-RateLimit-Reset"]) > 0
    assert "Retry-After" not in response.headers  # only refusals say when to come back


def test_limit_exceeded_is_429_in_envelope_with_retry_after(client):
    remaining = [
        client.get(ENDPOINT, headers=bearer(USER_KEY)).headers["X-RateLimit-Remaining"]
        for _ in range(3)
    ]
    assert remaining == ["2", "1", "0"]
    response = client.get(ENDPOINT, headers=bearer(USER_KEY))
    assert response.status_code == 429
    body = response.get_json()
    assert body["detail"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Remaining"] == "0"


def test_keys_have_separate_buckets(client):
    for _ in range(3):
        client.get(ENDPOINT, headers=bearer(USER_KEY))
    assert client.get(ENDPOINT, headers=bearer(USER_KEY)).status_code == 429
    assert client.get(ENDPOINT, headers=bearer(OTHER_KEY)).status_code == 200


def test_without_key_the_client_address_is_the_bucket(client):
    for _ in range(3):
        assert client.get(ENDPOINT, environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 401
    assert client.get(ENDPOINT, environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 429
    assert client.get(ENDPOINT, environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 401


def test_address_comes_through_one_proxy_hop(client):
    proxied = {"REMOTE_ADDR": "127.0.0.1"}
    for _ in range(3):
        client.get(ENDPOINT, environ_base=proxied, headers={"X-Forwarded-For": "198.51.100.7"})
    limited = client.get(
        ENDPOINT, environ_base=proxied, headers={"X-Forwarded-For": "198.51.100.7"}
    )
    assert limited.status_code == 429
    other = client.get(ENDPOINT, environ_base=proxied, headers={"X-Forwarded-For": "198.51.100.8"})
    assert other.status_code == 401


def test_health_is_exempt(client):
    for _ in range(10):
        response = client.get("/api/v1/health/liveness")
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers


def test_one_budget_per_key_across_routes(client):
    routes = [ENDPOINT, "/api/v1/upload/status/file_x", "/api/v1/models/job/job_x"]
    statuses = [client.get(route, headers=bearer(USER_KEY)).status_code for route in routes]
    assert statuses == [200, 404, 404]
    limited = client.get("/api/v1/status/tasks/task_x/status", headers=bearer(USER_KEY))
    assert limited.status_code == 429
    assert limited.get_json()["detail"]["code"] == "RATE_LIMIT_EXCEEDED"


def storage_of(app):
    """Return the limiter's counter storage."""
    return app.extensions["image2model.limiter"].storage


def test_counting_requests_starts_no_thread(app, client, monkeypatch):
    assert isinstance(storage_of(app), SweptMemoryStorage)
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda thread: started.append(thread))
    for _ in range(3):
        client.get(ENDPOINT, headers=bearer(USER_KEY))
    assert started == []


def test_limits_still_asks_the_storage_to_expire_on_every_count(app):
    storage = storage_of(app)
    calls = []
    storage._MemoryStorage__schedule_expiry = lambda: calls.append(True)
    storage.incr("probe", expiry=60)
    assert calls == [True]  # a limits release renaming its hook would leave counters unswept


def test_expired_counters_are_swept_by_a_later_count(app):
    storage = storage_of(app)
    storage.incr("old", expiry=0.05)
    wait_until(lambda: storage.expirations["old"] <= time.time(), 5, message="the window")
    storage.swept_at -= SweptMemoryStorage.SWEEP_EVERY
    storage.incr("new", expiry=60)
    assert "old" not in storage.storage and "old" not in storage.expirations
    assert storage.get("new") == 1


def test_a_storage_uri_set_by_the_operator_is_kept(app_config):
    built = create_app({**app_config, "RATELIMIT_STORAGE_URI": "memory://?keep=1"})
    assert built.config["RATELIMIT_STORAGE_URI"] == "memory://?keep=1"
    assert not isinstance(storage_of(built), SweptMemoryStorage)
