"""Integration: the real server behind nginx running deploy/nginx.conf: events stream through as
they happen, uploads pass within its body limit, and only nginx says who the client is."""

import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess

import pytest
import requests
from PIL import Image

from tests.fal_standin import FalStandIn
from tests.live_server import REPO, LiveServer, free_port, liveness_answers, wait_until
from tests.pipeline_helpers import USER_KEY, Client, fal_server, png_bytes

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it)"),
]

MAIN_CONF = """\
{user}
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 128; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/image2model.conf;
}}
"""


class NginxProxy:
    """nginx with the deployment's site file, in front of a live server, on ports of the test."""

    def __init__(self, folder, upstream_port):
        self.folder = folder
        self.upstream_port = upstream_port
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        """Write the configuration, start nginx in the foreground and wait until it proxies."""
        self.folder.mkdir(parents=True)
        site = (REPO / "deploy" / "nginx.conf").read_text()
        for old, new in (
            ("server 127.0.0.1:8000;", f"server 127.0.0.1:{self.upstream_port};"),
            ("listen 80 default_server;", f"listen 127.0.0.1:{self.port} default_server;"),
        ):
            assert site.count(old) == 1, old
            site = site.replace(old, new)
        (self.folder / "image2model.conf").write_text(site)
        # As root, nginx's workers would run as `nobody`, who cannot enter pytest's folders.
        user = "user root;" if os.geteuid() == 0 else ""
        (self.folder / "nginx.conf").write_text(MAIN_CONF.format(user=user, folder=self.folder))
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.folder), "-e", str(self.folder / "error.log")]
            + ["-c", str(self.folder / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: liveness_answers(self.process, self.url, self.error_log),
            15,
            interval=0.1,
            message=f"nginx on {self.port}",
        )
        return self

    def url(self, path):
        """Return the absolute URL of a path through nginx."""
        return self.base_url + path

    def error_log(self):
        """Return nginx's error log."""
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        """Stop nginx (fast shutdown) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)


def noise_png(seed):
    """Return a PNG of random pixels: about 2.3 MB, as PNG cannot compress noise."""
    pixels = random.Random(seed).randbytes(1024 * 768 * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (1024, 768), pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@pytest.fixture
def behind_nginx(tmp_path):
    """Return a function that starts a live server and nginx before it; both stop at the end."""
    started = []

    def start(server):
        started.append(server.start())
        started.append(NginxProxy(tmp_path / "nginx", server.port).start())
        return started[-1]

    yield start
    for process in reversed(started):
        process.stop()


def test_events_stream_through_nginx_as_they_happen(tmp_path, behind_nginx):
    with FalStandIn(latency=3.0, queue_time=0.0) as fal:
        proxy = behind_nginx(fal_server(tmp_path, fal))
        client = Client(proxy)
        upload = client.upload([("chair.png", png_bytes(1))], model_type="tripo3d")
        with requests.get(
            proxy.url(f"/api/v1/status/tasks/{upload['task_id']}/stream"),
            headers=client.headers,
            stream=True,
            timeout=30,
        ) as response:
            assert response.status_code == 200
            data = (line[6:] for line in response.iter_lines() if line.startswith(b"data: "))
            first = json.loads(next(data))
            # FAL is still working on it: the event came through as it happened, not at the end.
            assert client.job(upload["job_id"])["status"] not in ("completed", "failed")
            events = [first, *map(json.loads, data)]
    assert first["type"] == "progress"
    assert events[-1]["type"] == "completed"


def test_uploads_pass_and_an_oversize_file_gets_the_servers_json_413(tmp_path, behind_nginx):
    proxy = behind_nginx(LiveServer(tmp_path / "instance", env={"IMAGE2MODEL_API_KEYS": USER_KEY}))
    client = Client(proxy)
    photos = [(f"noise-{n}.png", noise_png(n)) for n in range(3)]
    assert sum(len(data) for _, data in photos) > 6 * 2**20  # well over nginx's default 1 MiB
    assert client.upload(photos)["total_files"] == 3
    response = requests.post(
        proxy.url("/api/v1/upload/"),
        headers=client.headers,
        files=[("files", ("huge.png", os.urandom(11 * 2**20), "image/png"))],
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["detail"]["code"] == "FILE_TOO_LARGE"


def test_a_client_cannot_choose_its_own_address(tmp_path, behind_nginx):
    env = {"IMAGE2MODEL_API_KEYS": USER_KEY, "IMAGE2MODEL_RATELIMIT_DEFAULT": "3 per minute"}
    proxy = behind_nginx(LiveServer(tmp_path / "instance", env=env))
    statuses = [
        requests.get(
            proxy.url("/api/v1/models/available"),
            headers={"X-Forwarded-For": f"198.51.100.{n}"},
            timeout=10,
        ).status_code
        for n in range(4)
    ]
    # Every request counts against the one real address, whatever the client claims.
    assert statuses == [401, 401, 401, 429]


def test_nginx_refusals_are_in_the_envelope_too(tmp_path, behind_nginx):
    server = LiveServer(tmp_path / "instance", env={"IMAGE2MODEL_API_KEYS": USER_KEY})
    proxy = behind_nginx(server)
    head = (
        "POST /api/v1/upload/ HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        f"boundary=B\r\nContent-Length: {300 * 2**20}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(head.encode())
        reply = b"".join(iter(lambda: sock.recv(65536), b"")).decode("latin-1")
    headers, _, body = reply.partition("\r\n\r\n")
    assert headers.startswith("HTTP/1.1 413") and "application/json" in headers
    assert json.loads(body)["detail"]["code"] == "FILE_TOO_LARGE"
    too_long = requests.get(proxy.url("/api/v1/models/job/" + "j" * 9000), timeout=10)
    assert too_long.status_code == 414
    assert too_long.json()["detail"]["code"] == "VALIDATION_ERROR"
    big_header = requests.get(proxy.url("/"), headers={"X-Big": "b" * 9000}, timeout=10)
    assert big_header.status_code == 400
    assert big_header.json()["detail"]["code"] == "VALIDATION_ERROR"
    trace = requests.request("TRACE", proxy.url("/api/v1/models/available"), timeout=10)
    assert trace.status_code == 405
    assert trace.json()["detail"]["code"] == "METHOD_NOT_ALLOWED"

    server.stop()  # nginx stays, with nothing behind it
    response = requests.get(proxy.url("/api/v1/health/liveness"), timeout=10)
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json()["detail"]["code"] == "SERVICE_UNAVAILABLE"
