"""Rate limits: per key (per client address without one), headers on every response, 429."""

import pytest

from tests.conftest import OTHER_KEY, USER_KEY, bearer

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
