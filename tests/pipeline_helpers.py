"""Helpers for integration tests: images, a live server wired to the FAL stand-in, waiting."""

import io
import json

import requests
from PIL import Image, ImageDraw

from tests.live_server import LiveServer, wait_until

USER_KEY = "live-user-key-0123456789"
OTHER_KEY = "live-other-key-0123456789"
ADMIN_KEY = "live-admin-key-0123456789"


def png_bytes(seed, size=(96, 72)):
    """Return a small PNG that differs by seed."""
    image = Image.new("RGB", size, (40 + seed * 30 % 200, 90, 160))
    ImageDraw.Draw(image).ellipse((10 + seed, 10, 60 + seed, 60), fill=(230, 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def fal_server(tmp_path, fal, instance="instance", **config):
    """Return a LiveServer using the stand-in as FAL, with quick polling and retries."""
    env = {
        **fal.env(),
        "IMAGE2MODEL_API_KEYS": f"{USER_KEY},{OTHER_KEY}",
        "IMAGE2MODEL_ADMIN_API_KEY": ADMIN_KEY,
        "IMAGE2MODEL_FAL_STORAGE_URL": fal.base_url,
        "IMAGE2MODEL_FAL_POLL_INTERVAL": "0.1",
        "IMAGE2MODEL_FAL_RETRY_BASE": "0.1",
        "IMAGE2MODEL_RATELIMIT_DEFAULT": "10000 per minute",
    }
    env.update({f"IMAGE2MODEL_{name}": str(value) for name, value in config.items()})
    return LiveServer(tmp_path / instance, env=env)


class Client:
    """A tiny API client for one key against a live server."""

    def __init__(self, server, key=USER_KEY):
        self.server = server
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, path, **kwargs):
        """GET an API path."""
        return requests.get(self.server.url(path), headers=self.headers, timeout=10, **kwargs)

    def upload(self, images, **fields):
        """Upload `(name, bytes)` pairs and return the response JSON (asserting 201)."""
        files = [("files", (name, data, "image/png")) for name, data in images]
        response = requests.post(
            self.server.url("/api/v1/upload/"),
            headers=self.headers,
            files=files,
            data=fields,
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id):
        """Return the job status JSON."""
        return self.get(f"/api/v1/models/job/{job_id}").json()

    def wait_job(self, job_id, states=("completed", "failed", "cancelled"), timeout=30):
        """Wait until the job reaches one of `states`; return its status JSON."""
        return wait_until(
            lambda: (lambda body: body if body["status"] in states else None)(self.job(job_id)),
            timeout,
            interval=0.1,
            message=f"job {job_id} in {states}",
        )

    def progress(self, job_id):
        """Return the per-file progress JSON."""
        return self.get(f"/api/v1/status/jobs/{job_id}/progress").json()

    def stream(self, task_id, timeout=60, last_event_id=None):
        """Read the task's SSE stream to its end; return `(events, raw lines)`."""
        headers = dict(self.headers)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        received, lines = [], []
        with requests.get(
            self.server.url(f"/api/v1/status/tasks/{task_id}/stream"),
            headers=headers,
            params={"timeout": timeout},
            stream=True,
            timeout=timeout + 10,
        ) as response:
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"].startswith("text/event-stream")
            event_id = None
            for line in response.iter_lines(decode_unicode=True):
                lines.append(line)
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    received.append((event_id, json.loads(line[6:])))
        return received, lines
