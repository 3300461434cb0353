"""Integration: the real server as `make run` starts it (gunicorn gthread), over HTTP."""

import json
import os
import signal
import socket

import pytest
import requests

from tests.live_server import REPO, LiveServer, wait_until
from tests.pipeline_helpers import png_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path):
    """Start `make run` with no key configured, as a fresh install would."""
    live = LiveServer(tmp_path / "instance").start()
    yield live
    live.stop()


def test_liveness_readiness_and_authenticated_call(server):
    liveness = requests.get(server.url("/api/v1/health/liveness"), timeout=5)
    assert liveness.json()["status"] == "alive"
    readiness = requests.get(server.url("/api/v1/health/readiness"), timeout=5)
    assert readiness.status_code == 200 and readiness.json()["status"] == "ready"

    key = server.dev_key()
    anonymous = requests.get(server.url("/api/v1/models/available"), timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"]["code"] == "AUTHENTICATION_REQUIRED"
    authed = requests.get(
        server.url("/api/v1/models/available"),
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )
    assert authed.status_code == 200
    assert {model["type"] for model in authed.json()} == {"tripo3d", "relief"}
    assert authed.headers["X-RateLimit-Limit"] == "60"
    assert server.log().count(key) == 1  # printed once, never logged again


def test_served_by_gunicorn_gthread(server):
    assert "Using worker: gthread" in server.log()
    assert "Booting worker" in server.log()
    metrics = requests.get(server.url("/api/v1/health/metrics"), timeout=5)
    assert metrics.status_code == 200 and "image2model_http_request" in metrics.text


def exchange(server, request, close_write=False):
    """Send raw bytes to the server and return its reply up to the end of a JSON body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while b"}}" not in reply and (chunk := sock.recv(65536)):
            reply += chunk
    status_line, _, rest = reply.decode("latin-1").partition("\r\n")
    return int(status_line.split()[1]), rest


PART = (
    b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
    b"Content-Type: image/png\r\n\r\n" + png_bytes(1, (400, 300)) + b"\r\n--B--\r\n"
)


def upload_head(server, length_header):
    """Return the head of a raw multipart upload request with one framing header."""
    return (
        "POST /api/v1/upload/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.dev_key()}\r\n"
        f"Content-Type: multipart/form-data; boundary=B\r\n{length_header}\r\n\r\n"
    ).encode()


def test_a_body_over_the_request_limit_is_refused_before_it_is_read(server):
    """An upload declaring more than MAX_FILES full files is answered 413 at once, unread."""
    head = upload_head(server, f"Content-Length: {26 * 10 * 1024 * 1024}")
    status, rest = exchange(server, head + b"--B\r\n")
    assert status == 413 and '"FILE_TOO_LARGE"' in rest


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"zz\r\n--B\r\n", "InvalidChunkSize"),
        # Werkzeug's stream turns gunicorn's NoMoreData into a client disconnect: no reason.
        (b"%x\r\n%b" % (len(PART), PART[: len(PART) // 2]), ""),
    ],
    ids=["bad chunk size", "cut off"],
)
def test_a_broken_chunked_body_is_400_not_500(server, body, reason):
    head = upload_head(server, "Transfer-Encoding: chunked")
    status, rest = exchange(server, head + body, close_write=True)
    assert status == 400 and '"VALIDATION_ERROR"' in rest and reason in rest
    assert "Unhandled exception" not in server.log()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (f"GET /api/v1/models/job/{'j' * 5000} HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ("GET /api/v1/health/liveness HTTP/1.1\r\nHost: x\r\nIf-None-Match: \x7f\r\n\r\n", 400),
        ("GET /api/v1/health/liveness HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    ],
    ids=["request line too long", "control byte in a header", "bad HTTP version"],
)
def test_requests_gunicorn_cannot_parse_get_the_envelope(server, request_head, status):
    answered, rest = exchange(server, request_head.encode("latin-1"))
    assert answered == status
    headers, _, body = rest.partition("\r\n\r\n")
    assert "Content-Type: application/json" in headers
    assert json.loads(body)["detail"]["code"] == "VALIDATION_ERROR"


def test_a_key_in_a_refused_header_stays_out_of_the_server_log(server):
    key = server.dev_key()
    head = f"POST /api/v1/upload/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {key}\r\n\r\n"
    status, rest = exchange(server, head.encode())
    assert status == 501 and '"VALIDATION_ERROR"' in rest  # the client's fault
    wait_until(lambda: "Invalid request from" in server.log(), 10, message="the refusal logged")
    assert server.log().count(key) == 1  # printed once at start-up, not again


def test_sigterm_stops_gracefully(tmp_path):
    live = LiveServer(tmp_path / "instance").start()
    live.stop(timeout=30)
    assert not live.group_alive()
    assert "Handling signal: term" in live.log()
    assert "Shutting down: Master" in live.log()


def test_sigterm_to_make_alone_stops_gunicorn(tmp_path):
    """A supervisor that signals only the process it started (make) stops the whole server."""
    live = LiveServer(tmp_path / "instance").start()
    try:
        os.kill(live.process.pid, signal.SIGTERM)
        wait_until(lambda: not live.group_alive(), 30, message="the server to stop")
    finally:
        live.stop()
    assert "Handling signal: term" in live.log()
    assert "Shutting down: Master" in live.log()


def test_ctrl_c_mid_job_stops_cleanly_and_the_job_resumes(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to make, master and worker at once."""
    key = "sigint-key-0123456789"
    live = LiveServer(tmp_path / "instance", env={"IMAGE2MODEL_API_KEYS": key}).start()
    headers = {"Authorization": f"Bearer {key}"}
    try:
        files = [("files", (f"{n}.png", png_bytes(n), "image/png")) for n in range(8)]
        upload = requests.post(
            live.url("/api/v1/upload/"), headers=headers, files=files, timeout=30
        ).json()
        job_url = live.url(f"/api/v1/models/job/{upload['job_id']}")
        wait_until(
            lambda: (
                requests.get(job_url, headers=headers, timeout=5).json()["status"] == "processing"
            ),
            30,
            message="the job to start",
        )
        live.signal(signal.SIGINT)
        wait_until(lambda: not live.group_alive(), 30, message="the server to stop")
    finally:
        live.stop()
    logs = live.log() + "".join(
        path.read_text() for path in (tmp_path / "instance" / "logs").glob("*.log")
    )
    assert "Traceback" not in logs and "Dispatcher pass failed" not in logs
    restarted = LiveServer(tmp_path / "instance", env={"IMAGE2MODEL_API_KEYS": key}).start()
    try:
        wait_until(
            lambda: (
                requests.get(
                    job_url.replace(str(live.port), str(restarted.port)), headers=headers, timeout=5
                ).json()["status"]
                == "completed"
            ),
            60,
            message="the job to finish after the restart",
        )
    finally:
        restarted.stop()


def test_the_sigterm_handler_takes_no_lock_and_still_stops_the_app(app, monkeypatch):
    import importlib.util
    import logging
    import threading
    import types

    from gunicorn import util

    from image2model.pool import get_pool

    monkeypatch.setattr(util, "write_error", util.write_error)  # restored after the test

    spec = importlib.util.spec_from_file_location("gunicorn_conf", REPO / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    original = signal.getsignal(signal.SIGTERM)
    try:
        error_log = logging.getLogger("test.gunicorn.error")
        conf.post_worker_init(
            types.SimpleNamespace(wsgi=app, log=types.SimpleNamespace(error_log=error_log))
        )
        handler = signal.getsignal(signal.SIGTERM)
        stopping = get_pool(app).stopping
        # The signal may land while this very thread holds a lock that stopping needs.
        with stopping._cond:
            caller = threading.Thread(target=handler, args=(signal.SIGTERM, None), daemon=True)
            caller.start()
            caller.join(timeout=5)
            assert not caller.is_alive()
        assert stopping.wait(timeout=5)
    finally:
        signal.signal(signal.SIGTERM, original)
