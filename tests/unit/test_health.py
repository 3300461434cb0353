"""Health endpoints: basic, detailed with real figures, metrics, liveness, readiness."""

import pytest

from image2model.ops import health
from image2model.store import db
from tests.conftest import USER_KEY, bearer, with_config


def test_basic(client):
    body = client.get("/api/v1/health/").get_json()
    assert body["status"] == "healthy"
    assert body["service"] == "image2model-backend"
    assert body["version"] == "1.0.0"
    assert body["timestamp"].endswith("Z")


def test_detailed_has_real_system_figures_and_components(client):
    body = client.get("/api/v1/health/detailed").get_json()
    assert body["status"] == "healthy"
    system = body["system"]
    assert system["platform"] == "Linux"
    for field in ("cpu_usage_percent", "memory_usage_percent", "disk_usage_percent"):
        assert 0 <= system[field] <= 100
    assert system["memory_usage_percent"] > 0
    components = {component["name"]: component for component in body["components"]}
    assert set(components) == {"database", "worker_pool", "disk_space", "fal"}
    assert components["database"]["status"] == "healthy"
    assert components["database"]["schema_version"] == len(db.MIGRATIONS)
    assert components["database"]["response_time_ms"] >= 0
    assert components["worker_pool"]["alive"] is True
    assert components["worker_pool"]["queue_depth"] == 0
    assert components["worker_pool"]["fal_step_limit"] is None  # inline: no threads to limit
    assert components["disk_space"]["free_mb"] > 0
    assert components["fal"] == {
        **components["fal"],
        "status": "not_configured",
        "key_configured": False,
    }
    assert body["uptime_seconds"] >= 0


@with_config(POOL_SIZE=2)  # one FAL slot: the other thread is left to conversions
def test_detailed_shows_the_fal_step_limit_and_the_steps_under_it(client):
    body = client.get("/api/v1/health/detailed").get_json()
    pool = next(c for c in body["components"] if c["name"] == "worker_pool")
    assert (pool["fal_step_limit"], pool["fal_steps_running"], pool["fal_steps_held"]) == (1, 0, 0)


def test_fal_component_reports_configured_key_without_revealing_it(app_config):
    from image2model import create_app

    app = create_app({**app_config, "FAL_KEY": "fal-very-secret"})
    response = app.test_client().get("/api/v1/health/detailed")
    fal = next(c for c in response.get_json()["components"] if c["name"] == "fal")
    assert fal["status"] == "healthy" and fal["key_configured"] is True
    assert "fal-very-secret" not in response.get_data(as_text=True)


def test_disk_below_threshold_is_unhealthy_and_not_ready(app, client):
    app.config["DISK_MIN_FREE_MB"] = 10**12
    detailed = client.get("/api/v1/health/detailed").get_json()
    assert detailed["status"] == "unhealthy"
    response = client.get("/api/v1/health/readiness")
    assert response.status_code == 503
    assert response.get_json()["status"] == "not_ready"


def test_database_failure_is_reported(app, client):
    app.config["DATABASE_NAME"] = "missing-dir/cannot.sqlite3"
    response = client.get("/api/v1/health/readiness")
    assert response.status_code == 503
    database = next(c for c in response.get_json()["components"] if c["name"] == "database")
    assert database["status"] == "unhealthy"


def test_stopped_pool_is_not_ready(app, client):
    app.extensions["image2model.pool"].shutdown()
    assert client.get("/api/v1/health/readiness").status_code == 503


def test_startup_not_finished_is_not_ready(app, client):
    app.extensions["image2model.ready"] = False
    response = client.get("/api/v1/health/readiness")
    assert response.status_code == 503
    assert {"name": "startup", "status": "unhealthy"} in response.get_json()["components"]


def test_readiness_ok(client):
    response = client.get("/api/v1/health/readiness")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert {c["name"] for c in body["components"]} >= {"database", "disk_space", "startup"}


def test_liveness(client):
    body = client.get("/api/v1/health/liveness").get_json()
    assert body["status"] == "alive" and body["timestamp"].endswith("Z")


def test_metrics_are_prometheus_text_labelled_by_route_template(client):
    client.get("/api/v1/models/available", headers=bearer(USER_KEY))
    client.get("/api/v1/health/liveness")
    client.get("/api/v1/no/such/path/abc123")
    response = client.get("/api/v1/health/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    assert 'url_rule="/api/v1/models/available"' in text
    assert "process_resident_memory_bytes" in text
    assert "abc123" not in text  # raw paths never become labels


@pytest.mark.parametrize("path", ["/", "/detailed", "/liveness", "/readiness", "/metrics"])
def test_health_calls_are_fast(client, path):
    import time

    started = time.perf_counter()
    client.get("/api/v1/health" + path)
    # Generous bound: catches a blocking 1-second CPU sample, not machine speed.
    assert time.perf_counter() - started < 0.9


def test_overall_status():
    assert health.overall_status([{"status": "healthy"}, {"status": "not_configured"}]) == "healthy"
    assert health.overall_status([{"status": "healthy"}, {"status": "unhealthy"}]) == "unhealthy"
