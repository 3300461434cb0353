"""What a cheap request keeps: every request in the access log, written by the log writer thread
and never lost at a close or an exit; rate limits counted on limited routes only; request metrics
for every route; one database connection per request thread."""

import json
import logging
import logging.handlers
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from flask import request

from image2model import create_app
from image2model.logs import setup as log_setup
from image2model.pipeline import lifecycle
from image2model.store import db
from tests.conftest import USER_KEY, bearer, with_config

LIMITED = "/api/v1/models/available"


@pytest.fixture
def app_config(app_config):
    """The log writer thread on, as the server runs."""
    return {**app_config, "LOG_THREAD": True}


def entries(app, log_type):
    """Return the parsed entries of a live log file, as written so far (no waiting)."""
    path = os.path.join(log_setup.log_directory(app), f"{log_type}.log")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def routes(app):
    """Return the routes of the access log's entries, once every record so far is written."""
    assert log_setup.flush()
    return [entry["route"] for entry in entries(app, "access")]


def test_the_root_holds_a_queue_and_no_logger_a_file(app):
    root = logging.getLogger()
    queues = [h for h in root.handlers if isinstance(h, logging.handlers.QueueHandler)]
    assert len(queues) == 1
    for name in (None, log_setup.ACCESS_LOGGER, *log_setup.WORKER_LOGGERS):
        handlers = logging.getLogger(name).handlers
        assert not any(isinstance(h, log_setup.LogFileHandler) for h in handlers), name


def test_the_access_record_is_written_by_the_writer_thread(app, client, monkeypatch):
    access = log_setup.active(log_setup.log_directory(app)).handlers["access"]
    writing_threads = []
    write = type(access).write

    def noted_write(handler, records):
        writing_threads.append(threading.current_thread().name)
        write(handler, records)

    monkeypatch.setattr(type(access), "write", noted_write)
    assert client.get("/api/v1/health/liveness").status_code == 200

    assert routes(app) == ["/api/v1/health/liveness"]
    assert set(writing_threads) == {"image2model-logs"}
    (entry,) = entries(app, "access")
    assert entry["thread"] == threading.current_thread().name  # the request's, not the writer's
    assert entry["status"] == 200 and entry["logger"] == log_setup.ACCESS_LOGGER


def test_every_request_of_many_threads_is_logged(app):
    def requests():
        client = app.test_client()
        for _ in range(25):
            assert client.get("/api/v1/health/", headers=bearer(USER_KEY)).status_code == 200

    threads = [threading.Thread(target=requests) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    assert routes(app) == ["/api/v1/health/"] * 200
    assert {entry["thread"] for entry in entries(app, "access")} == {t.name for t in threads}


def test_records_still_queued_are_written_when_the_files_are_replaced(app, app_config, tmp_path):
    for number in range(300):
        logging.getLogger("image2model.pipeline.dispatcher").info("queued %d", number)
    other = create_app({**app_config, "INSTANCE_PATH": str(tmp_path / "other")})
    try:
        # No flush: closing the first app's files wrote what its writer still held.
        messages = [entry["message"] for entry in entries(app, "worker")]
        assert messages == [f"queued {number}" for number in range(300)]
    finally:
        lifecycle.shutdown(other)


def test_after_the_writer_stops_records_are_written_at_once(app, client):
    log_setup.active(log_setup.log_directory(app)).stop_writer()
    assert not [t for t in threading.enumerate() if t.name == "image2model-logs"]
    client.get("/api/v1/health/liveness")
    logging.getLogger("image2model.pool").warning("after the writer")
    assert [entry["route"] for entry in entries(app, "access")] == ["/api/v1/health/liveness"]
    assert [entry["message"] for entry in entries(app, "worker")] == ["after the writer"]


def test_a_flush_waits_at_most_its_timeout(app, client):
    access = log_setup.active(log_setup.log_directory(app)).handlers["access"]
    with access.lock:  # the writer thread cannot write the access log meanwhile
        client.get("/api/v1/health/liveness")
        assert log_setup.flush(timeout=0.2) is False
    assert routes(app) == ["/api/v1/health/liveness"]


def test_an_exiting_process_writes_what_is_queued(tmp_path):
    config = {"INSTANCE_PATH": str(tmp_path / "instance"), "POOL_SIZE": 0, "LOG_THREAD": True}
    script = (
        "import logging\n"
        "from image2model import create_app\n"
        f"client = create_app({config!r}).test_client()\n"
        "for number in range(100):\n"
        "    logging.getLogger('image2model.pipeline.dispatcher').info('before exit %d', number)\n"
        "    client.get('/api/v1/health/liveness')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "instance" / "logs"
    access = (folder / "access.log").read_text().splitlines()
    worker_log = (folder / "worker.log").read_text().splitlines()
    assert len(access) == 100 and len(worker_log) == 100
    assert json.loads(worker_log[-1])["message"] == "before exit 99"


@with_config(RATELIMIT_DEFAULT="3 per minute", LOG_THREAD=True)
def test_health_probes_never_reach_the_limiter_while_limited_routes_count(app, client):
    limiter = app.extensions["image2model.limiter"]
    counted = []
    hit = limiter.limiter.hit

    def counted_hit(*args, **kwargs):
        counted.append(args[1:])
        return hit(*args, **kwargs)

    limiter.limiter.hit = counted_hit
    for path in ("/", "/liveness", "/readiness", "/detailed", "/metrics") * 4:
        response = client.get("/api/v1/health" + path)
        assert response.status_code == 200
        assert not any(name.startswith("X-RateLimit") for name in response.headers.keys())
    assert counted == []

    statuses = [client.get(LIMITED, headers=bearer(USER_KEY)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert len(counted) == 4 and len(set(counted)) == 1  # one shared budget for the key
    assert client.get("/api/v1/health/liveness").status_code == 200  # still answered


def metric(text, name, **labels):
    """Return the value of one sample of the Prometheus text, or None."""
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if not sample.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        if found == labels:
            return float(value)
    return None


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_metrics_count_every_request_health_probes_too(app_config, level):
    app = create_app({**app_config, "LOG_LEVEL": level})
    try:
        client = app.test_client()
        for _ in range(7):
            client.get("/api/v1/health/liveness")
        for _ in range(2):
            client.get(LIMITED, headers=bearer(USER_KEY))
        client.get("/api/v1/no/such/route")
        text = client.get("/api/v1/health/metrics").get_data(as_text=True)
    finally:
        lifecycle.shutdown(app)

    def count(rule, status):
        return metric(
            text,
            "image2model_http_request_duration_seconds_count",
            method="GET",
            url_rule=rule,
            status=status,
        )

    assert count("/api/v1/health/liveness", "200") == 7
    assert count(LIMITED, "200") == 2
    assert count("None", "404") == 1
    assert metric(text, "image2model_http_request_total", method="GET", status="200") == 9
    assert "image2model_http_request_exceptions_total" in text
    assert metric(text, "image2model_app_info", version="1.0.0") == 1


def test_a_request_raising_past_every_handler_is_counted_as_an_exception(app, client):
    @app.after_request
    def broken(response):
        if request.path.endswith("/liveness"):
            raise RuntimeError("an after-request hook failed")
        return response

    with pytest.raises(RuntimeError):  # TESTING propagates it instead of answering 500
        client.get("/api/v1/health/liveness")
    text = client.get("/api/v1/health/metrics").get_data(as_text=True)
    assert metric(text, "image2model_http_request_exceptions_total", method="GET", status="500")
    assert metric(
        text,
        "image2model_http_request_duration_seconds_count",
        method="GET",
        url_rule="/api/v1/health/liveness",
        status="500",
    )


def test_a_request_thread_opens_one_connection_for_all_its_requests(app, client, monkeypatch):
    opened = []
    connect = db.connect

    def counted_connect(path):
        opened.append(path)
        return connect(path)

    monkeypatch.setattr(db, "connect", counted_connect)
    for _ in range(5):
        client.get("/api/v1/models/job/job_0123456789abcdef01234567", headers=bearer(USER_KEY))
    assert len(opened) <= 1
