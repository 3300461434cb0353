"""Run the real server the way `make run` does, on a free port and its own data folder."""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import requests

REPO = pathlib.Path(__file__).resolve().parents[1]


def free_port():
    """Return a TCP port that was free a moment ago on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout, interval=0.05, message="condition"):
    """Poll `condition` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def liveness_answers(process, url, log):
    """Return True once liveness answers 200 via `url`; raise with `log()` if `process` ended."""
    if process.poll() is not None:
        raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{log()}")
    try:
        return requests.get(url("/api/v1/health/liveness"), timeout=1).status_code == 200
    except (requests.ConnectionError, requests.Timeout):
        # gunicorn's master listens before its worker has loaded the app: a connection
        # can be accepted and then wait longer than this probe does.
        return False


class LiveServer:
    """`make run` in its own process group, with stderr captured to a file."""

    def __init__(self, instance_path, env=None, port=None):
        self.instance_path = pathlib.Path(instance_path)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.instance_path.parent / f"server-{self.port}.log"
        self.extra_env = env or {}
        self.process = None

    def start(self, timeout=60):
        """Start the server and wait until liveness answers."""
        self.instance_path.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "IMAGE2MODEL_INSTANCE_PATH": str(self.instance_path),
            **self.extra_env,
        }
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", "-s", "run", f"VENV={sys.prefix}"],
            cwd=REPO,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(self._alive, timeout, interval=0.1, message=f"server on {self.port}")
        except BaseException:
            self.kill()
            raise
        return self

    def _alive(self):
        """Return True once liveness answers 200; fail fast if the process died."""
        return liveness_answers(self.process, self.url, self.log)

    def url(self, path):
        """Return the absolute URL of a path on this server."""
        return self.base_url + path

    def log(self):
        """Return what the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def dev_key(self, timeout=10):
        """Return the development key the server printed on start-up."""

        def find():
            match = re.search(r"(i2m_[A-Za-z0-9_-]{20,})", self.log())
            return match and match.group(1)

        return wait_until(find, timeout, message="development key in the server log")

    def signal(self, signum):
        """Send a signal to the whole process group (make, gunicorn master and worker)."""
        os.killpg(self.process.pid, signum)

    def group_alive(self):
        """Return True while any process of the server's group still exists."""
        if self.process.poll() is None:
            return True  # make itself (reaping it here, so no zombie keeps the group)
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout=30):
        """Stop gracefully with SIGTERM and wait for every process; SIGKILL if it takes too long."""
        if self.process is None:
            return
        if self.group_alive():
            self.signal(signal.SIGTERM)
            try:
                wait_until(lambda: not self.group_alive(), timeout, message="server shutdown")
            except TimeoutError:
                self.kill()
        self.process.wait(timeout=5)
        self._log_file.close()

    def kill(self):
        """SIGKILL every process of the server at once, as a crash would."""
        try:
            self.signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_until(lambda: not self.group_alive(), 30, message="killed server to vanish")
        self.process.wait(timeout=5)
        self._log_file.close()
