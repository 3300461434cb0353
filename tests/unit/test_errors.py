"""The error envelope: every error of the API has one shape, with the contract's codes."""

import logging

import pytest
from flask import Blueprint

from image2model import params
from image2model.errors import ApiError
from tests.conftest import ADMIN_KEY, USER_KEY, bearer
from tests.helpers import assert_envelope

WALK = [
    ("GET", "/no-such-page", None, 404, "NOT_FOUND"),
    ("GET", "/api/v1/", None, 404, "NOT_FOUND"),
    ("GET", "/api/v1/nothing/here", USER_KEY, 404, "NOT_FOUND"),
    ("GET", "/api/v1/health/nope", None, 404, "NOT_FOUND"),
    ("POST", "/api/v1/health/", None, 405, "METHOD_NOT_ALLOWED"),
    ("DELETE", "/api/v1/health/liveness", None, 405, "METHOD_NOT_ALLOWED"),
    ("PUT", "/api/v1/health/readiness", None, 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/api/v1/models/available", None, 401, "AUTHENTICATION_REQUIRED"),
    ("GET", "/api/v1/models/available", "bad", 401, "AUTHENTICATION_REQUIRED"),
    ("POST", "/api/v1/models/available", USER_KEY, 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/api/v1/admin/disk-usage", None, 401, "AUTHENTICATION_REQUIRED"),
    ("GET", "/api/v1/admin/disk-usage", USER_KEY, 403, "INVALID_API_KEY"),
    ("POST", "/api/v1/admin/disk-usage", ADMIN_KEY, 405, "METHOD_NOT_ALLOWED"),
    ("POST", "/api/v1/upload/", None, 401, "AUTHENTICATION_REQUIRED"),
    ("POST", "/api/v1/upload", USER_KEY, 400, "VALIDATION_ERROR"),
    ("GET", "/api/v1/upload/", USER_KEY, 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/api/v1/upload/status/file_nope", USER_KEY, 404, "NOT_FOUND"),
    ("GET", "/api/v1/upload/batch/batch_nope/status", USER_KEY, 404, "NOT_FOUND"),
    ("POST", "/api/v1/models/generate", USER_KEY, 400, "VALIDATION_ERROR"),
    ("GET", "/api/v1/models/generate", USER_KEY, 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/api/v1/models/job/job_nope", USER_KEY, 404, "NOT_FOUND"),
    ("GET", "/api/v1/models/job/job_nope", None, 401, "AUTHENTICATION_REQUIRED"),
    ("GET", "/api/v1/models/download/job_nope", USER_KEY, 404, "NOT_FOUND"),
    ("GET", "/api/v1/models/download/job_nope?format=fbx", USER_KEY, 400, "VALIDATION_ERROR"),
    ("GET", "/api/v1/status/jobs/job_nope/progress", USER_KEY, 404, "NOT_FOUND"),
    ("GET", "/api/v1/status/tasks/task_nope/status", USER_KEY, 404, "NOT_FOUND"),
    ("GET", "/api/v1/status/tasks/task_nope/stream", USER_KEY, 404, "NOT_FOUND"),
    ("GET", "/api/v1/status/tasks/task_nope/stream", None, 401, "AUTHENTICATION_REQUIRED"),
    ("GET", "/api/v1/download/job_nope/all", USER_KEY, 404, "NOT_FOUND"),
    ("GET", "/api/v1/download/job_nope/model.glb", USER_KEY, 404, "NOT_FOUND"),
    ("GET", "/api/v1/download/direct/model.glb", USER_KEY, 404, "NOT_FOUND"),
    ("DELETE", "/api/v1/download/job_nope/all", USER_KEY, 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/api/v1/debug/job/job_nope", USER_KEY, 403, "INVALID_API_KEY"),
    ("POST", "/api/v1/admin/cleanup", USER_KEY, 403, "INVALID_API_KEY"),
    ("GET", "/api/v1/admin/list-files?directory=etc", ADMIN_KEY, 400, "VALIDATION_ERROR"),
    ("DELETE", "/api/v1/admin/delete-job/job_nope", ADMIN_KEY, 404, "NOT_FOUND"),
    ("GET", "/api/v1/logs/statistics", USER_KEY, 403, "INVALID_API_KEY"),
    ("GET", "/api/v1/logs/statistics", None, 401, "AUTHENTICATION_REQUIRED"),
    ("GET", "/api/v1/logs/analyze?hours_back=1000", ADMIN_KEY, 400, "VALIDATION_ERROR"),
    ("GET", "/api/v1/logs/export/export_nope", ADMIN_KEY, 404, "NOT_FOUND"),
    ("PUT", "/api/v1/logs/types", ADMIN_KEY, 405, "METHOD_NOT_ALLOWED"),
]


@pytest.mark.parametrize(("method", "path", "key", "status", "code"), WALK)
def test_walk_endpoints_envelope(client, method, path, key, status, code):
    response = client.open(path, method=method, headers=bearer(key) if key else {})
    assert_envelope(response, status, code)


def test_405_keeps_allow_header(client):
    response = client.post("/api/v1/health/liveness")
    assert "GET" in response.headers["Allow"]


@pytest.fixture
def app(app):
    """Add routes that fail in the ways the handlers must cover."""
    failing = Blueprint("failing", __name__)

    @failing.get("/boom")
    def boom():
        raise RuntimeError("secret internals: password=hunter2")

    @failing.post("/json")
    def echo_json():
        return params.json_object()

    @failing.post("/body")
    def read_body():
        from flask import request

        return {"size": len(request.get_data())}

    @failing.get("/api-error")
    def api_error():
        raise ApiError("FAL_API_ERROR", "FAL said no", {"attempt": 1}, status=502)

    @failing.get("/busy")
    def busy():
        raise ApiError("SERVICE_UNAVAILABLE", "Busy", {}, 503, headers={"Retry-After": "5"})

    @failing.get("/stopping")
    def stopping():
        raise ApiError("SERVICE_UNAVAILABLE", "Shutting down", {}, 503)

    app.register_blueprint(failing, url_prefix="/_test")
    return app


def test_unexpected_exception_is_500_logged_not_sent(client, caplog):
    with caplog.at_level(logging.ERROR):
        response = client.get("/_test/boom")
    detail = assert_envelope(response, 500, "PROCESSING_ERROR")
    assert "hunter2" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    assert detail["details"] == {}
    assert any(record.exc_info for record in caplog.records)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2",
        b"\xff\xfe",
        b'{"a": }',
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b'{"a": 1e400}',
    ],
)
def test_malformed_json_is_400(client, body):
    response = client.post("/_test/json", data=body, content_type="application/json")
    assert_envelope(response, 400, "VALIDATION_ERROR")


def test_json_in_another_content_type_is_400_saying_so(client):
    response = client.post("/_test/json", data=b'{"a": 1}', content_type="text/plain")
    assert "application/json" in assert_envelope(response, 400, "VALIDATION_ERROR")["message"]


def test_json_must_be_an_object(client):
    response = client.post("/_test/json", json=[1, 2, 3])
    assert assert_envelope(response, 400, "VALIDATION_ERROR")["details"]["received"] == "list"


def test_empty_json_body_is_400(client):
    assert_envelope(client.post("/_test/json"), 400, "VALIDATION_ERROR")


def test_oversize_body_is_413(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = client.post("/_test/body", data=b"x" * 5000, content_type="application/octet-stream")
    assert_envelope(response, 413, "FILE_TOO_LARGE")


def test_api_error_renders_its_own_code_and_details(client):
    detail = assert_envelope(client.get("/_test/api-error"), 502, "FAL_API_ERROR")
    assert detail["details"] == {"attempt": 1}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("5", 5),
        (5, 5),
        (" 7 ", 7),
        ("0", None),
        ("x", None),
        (True, None),
        ("1e3", None),
        ("100001", None),
    ],
)
def test_bounded_int(app, value, ok):
    with app.test_request_context():
        if ok is None:
            with pytest.raises(ApiError) as raised:
                params.bounded_int(value, "face_limit", 1, 100000)
            assert raised.value.code == "VALIDATION_ERROR"
            assert "face_limit" in raised.value.message
        else:
            assert params.bounded_int(value, "face_limit", 1, 100000) == ok


def test_json_body_over_its_own_limit_is_413(client):
    response = client.post(
        "/_test/json", data=b'{"a": "' + b"x" * 100_000 + b'"}', content_type="application/json"
    )
    assert_envelope(response, 413, "FILE_TOO_LARGE")


def test_deeply_nested_json_is_400(client):
    response = client.post("/_test/json", data=b"[" * 50_000, content_type="application/json")
    assert_envelope(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("path", ["/api/v1/admin/disk-usage", "/api/v1/debug/job/job_x"])
def test_options_on_admin_routes_is_not_an_error(client, path):
    assert client.open(path, method="OPTIONS").status_code == 200


def test_health_without_trailing_slash_answers_json(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200 and response.get_json()["status"] == "healthy"


def test_the_apps_own_retry_after_is_kept(client):
    response = client.get("/_test/busy")
    assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert response.headers["Retry-After"] == "5"  # not the rate limit window's reset


def test_a_refusal_without_its_own_retry_after_gets_none(client):
    response = client.get("/_test/stopping")
    assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert "Retry-After" not in response.headers  # the rate limit's window says nothing here
