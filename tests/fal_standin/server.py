"""FalStandIn: a loopback HTTPS stand-in for FAL.AI's queue and storage, serving Tripo3D."""

import itertools
import os
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable

import trustme

from . import assets
from .faults import Faults
from .handler import TLSServer
from .jobs import JobBoard
from .storage_api import Storage
from .wire import Reply, detail_reply

RESULT_MODES = ("ok", "missing_mesh", "model_error", "bad_glb")
RECORDS = ("submits", "cancels", "uploads", "downloads", "calls", "arrivals")


class FalStandIn:
    """A loopback HTTPS server that speaks fal's queue and storage protocols for Tripo3D.

    latency, queue_time, queue_ahead and result_mode may change at any time; each request
    keeps the values in force when it was submitted.
    """

    def __init__(
        self,
        key: str = "test-fal-key",
        latency: float = 2.0,
        port: int = 0,
        concurrency: int | None = None,
        *,
        queue_time: float | None = None,
        queue_ahead: int = 2,
        result_mode: str = "ok",
        validate_at: str = "submit",
        ca_dir: str | os.PathLike | None = None,
    ):
        if validate_at not in ("submit", "result"):
            raise ValueError(f"validate_at must be 'submit' or 'result', not {validate_at!r}")
        self.key = key
        self.latency = latency
        self.queue_time = queue_time  # seconds IN_QUEUE before a runner; None: latency / 4
        self.queue_ahead = queue_ahead  # other accounts' requests ahead, drained in queue_time
        self.validate_at = validate_at
        self.result_mode = result_mode
        self.board = JobBoard(concurrency)
        self.storage = Storage()
        self.faults = Faults()
        # Numbers connections across restarts; calls on one keep-alive connection share one.
        self.connection_numbers = itertools.count(1)
        self.connections_opened = 0  # the number of the last connection opened
        self.ca_path: str | None = None
        self._port = port
        self._ca_dir = os.fspath(ca_dir) if ca_dir is not None else None
        self._tmp_dir: str | None = None
        self._ca: trustme.CA | None = None
        self._cert: trustme.LeafCert | None = None
        self._server: TLSServer | None = None
        self._thread: threading.Thread | None = None
        self._recorded = threading.Condition()
        self._records: dict[str, list[dict]] = {name: [] for name in RECORDS}

    # Lifecycle

    def start(self) -> "FalStandIn":
        """Write the CA file and serve on 127.0.0.1; after stop(), serve again on the same port."""
        if self._server is not None:
            raise RuntimeError("the stand-in is already running")
        if self._ca is None:
            self._ca = trustme.CA()
            self._cert = self._ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(context)
        if self._ca_dir is None:
            self._tmp_dir = self._tmp_dir or tempfile.mkdtemp(prefix="fal-standin-")
            os.makedirs(self._tmp_dir, exist_ok=True)
        self.ca_path = os.path.join(self._ca_dir or self._tmp_dir, "fal-standin-ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_path)
        # Built now so that no submit pays for building them.
        assets.model_glb()
        assets.preview_webp()
        self.faults.arm()
        try:
            self._server = TLSServer(("127.0.0.1", self._port), context, self)
        except OSError:
            if self._tmp_dir is not None:
                shutil.rmtree(self._tmp_dir, ignore_errors=True)
            raise
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fal-standin-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end live connections and stalls, and remove a temporary CA directory."""
        if self._server is None:
            return
        self.faults.release()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
        self._server.close_connections(timeout=5.0)
        self._server = self._thread = None
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def __enter__(self) -> "FalStandIn":
        """Start serving."""
        return self.start()

    def __exit__(self, *exc_info) -> None:
        """Stop serving."""
        self.stop()

    @property
    def host(self) -> str:
        """Return "127.0.0.1:PORT", the value for FAL_QUEUE_RUN_HOST."""
        if not self._port:
            raise RuntimeError("the stand-in has no port until it is started")
        return f"127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """Return https://127.0.0.1:PORT, the value for fal_client.client.REST_URL and CDN_URL."""
        return f"https://{self.host}"

    def env(self) -> dict[str, str]:
        """Return the environment variables a fal-client process needs to use this stand-in."""
        return {
            "FAL_KEY": self.key,
            "FAL_QUEUE_RUN_HOST": self.host,
            "SSL_CERT_FILE": self.ca_path,
            "REQUESTS_CA_BUNDLE": self.ca_path,
        }

    def ssl_context(self) -> ssl.SSLContext:
        """Return a client SSL context that trusts the stand-in's CA (e.g. for httpx verify=)."""
        return ssl.create_default_context(cafile=self.ca_path)

    # Settings that apply to later requests

    @property
    def concurrency(self) -> int | None:
        """Return how many requests may run at once; None means no limit."""
        return self.board.concurrency

    @concurrency.setter
    def concurrency(self, limit: int | None) -> None:
        self.board.concurrency = limit

    @property
    def result_mode(self) -> str:
        """Return how later requests end: ok, missing_mesh, model_error or bad_glb."""
        return self._result_mode

    @result_mode.setter
    def result_mode(self, mode: str) -> None:
        if mode not in RESULT_MODES:
            raise ValueError(f"result_mode must be one of {RESULT_MODES}, not {mode!r}")
        self._result_mode = mode

    # Faults, applied before auth is checked

    def fail_next(self, stage, status, times=1, body=None, headers=None) -> None:
        """Answer the next `times` calls of a stage with `status` instead of serving them.

        body: a dict or list is sent as JSON, str or bytes as text/html (e.g. an nginx page);
        by default {"detail": <reason phrase>}. headers: exactly the extra headers to send.
        """
        self.faults.fail(stage, status, times, body, headers)

    def drop_next(self, stage, times=1) -> None:
        """Serve the next `times` calls of a stage, then close the connection without a reply."""
        self.faults.drop(stage, times)

    def cut_next(self, stage, times=1) -> None:
        """Serve the next `times` calls of a stage, but close the connection halfway through
        the reply's body (the headers, status 200 included, went out whole)."""
        self.faults.cut(stage, times)

    def hang(self, stage, seconds) -> None:
        """Hold each answer of a stage `seconds`; 0 or None ends the hang and frees held ones."""
        self.faults.hang(stage, seconds)

    def clear_faults(self) -> None:
        """Forget pending failures, drops and hangs."""
        self.faults.clear()

    # Observation

    @property
    def submits(self) -> list[dict]:
        """Return accepted submissions: request_id, path, arguments, webhook, at (monotonic)."""
        return self._copy("submits")

    @property
    def submit_count(self) -> int:
        """Return how many submissions were accepted."""
        with self._recorded:
            return len(self._records["submits"])

    @property
    def status_calls(self) -> int:
        """Return how many status calls arrived, faulted ones included."""
        return sum(1 for call in self._copy("calls") if call["stage"] == "status")

    @property
    def result_calls(self) -> int:
        """Return how many result calls arrived, faulted ones included."""
        return sum(1 for call in self._copy("calls") if call["stage"] == "result")

    @property
    def cancels(self) -> list[dict]:
        """Return cancel calls: request_id, outcome, status_code."""
        return self._copy("cancels")

    @property
    def uploads(self) -> list[dict]:
        """Return stored uploads: via (cdn or gcs), file_name, content_type, size, url."""
        return self._copy("uploads")

    @property
    def downloads(self) -> list[dict]:
        """Return served file downloads: path, size."""
        return self._copy("downloads")

    @property
    def calls(self) -> list[dict]:
        """Return every routed call: method, path, stage, status (absent when dropped),
        connection (its number: calls on one keep-alive connection share it) and auth_scheme
        (the Authorization header's scheme, or None; never the credential)."""
        return self._copy("calls")

    @property
    def arrivals(self) -> list[dict]:
        """Return every request as it arrived, before faults and hangs: method, path, stage,
        connection and at (monotonic), so a held answer is seen while it is held."""
        return self._copy("arrivals")

    def state(self, request_id: str) -> str | None:
        """Return IN_QUEUE, IN_PROGRESS or COMPLETED for a request, or None if unknown."""
        found = self.board.view(request_id)
        return found[0].state if found else None

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0):
        """Return predicate()'s first truthy value, re-checked on each call; TimeoutError after."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            with self._recorded:
                # Wake on the next recorded call, and at least every 50 ms for clock-driven states.
                self._recorded.wait(min(remaining, 0.05))

    # Used by the routes

    def record(self, kind: str, entry: dict) -> None:
        """Append an observation and wake waiters."""
        with self._recorded:
            self._records[kind].append(entry)
            self._recorded.notify_all()

    def check_key(self, authorization: str | None) -> Reply | None:
        """Return a 401 reply unless the header is `Key <key>`."""
        if not authorization:
            return detail_reply(401, "Missing Authorization header")
        scheme, _, credential = authorization.partition(" ")
        if scheme != "Key" or credential != self.key:
            return detail_reply(401, "Invalid key")
        return None

    def _copy(self, kind: str) -> list[dict]:
        """Return a snapshot of one kind of observation."""
        with self._recorded:
            return [dict(entry) for entry in self._records[kind]]
