"""HTTP plumbing: a TLS ThreadingHTTPServer, its request handler and the route table."""

import logging
import re
import socket
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from urllib.parse import parse_qsl, urlsplit

from . import queue_api, storage_api
from .wire import Call, Reply, detail_reply

logger = logging.getLogger(__name__)

REQUEST_URL = re.compile(
    r"^/(?P<owner>[^/]+)/(?P<alias>[^/]+)(?:/.+?)?/requests/(?P<request_id>[^/]+)"
    r"(?P<action>/status|/cancel)?$"
)
STORAGE_ROUTES = {
    # path: (stage, auth, {method: route})
    "/storage/auth/token": ("token", "key", {"POST": storage_api.token}),
    "/storage/upload/initiate": ("upload", "key", {"POST": storage_api.initiate}),
    "/files/upload": ("upload", None, {"POST": storage_api.upload}),
}
QUEUE_ACTIONS = {
    None: ("result", {"GET": queue_api.result}),
    "/status": ("status", {"GET": queue_api.status}),
    "/cancel": ("cancel", {"PUT": queue_api.cancel}),
}


def route(path: str):
    """Return (stage, auth, {method: route}, params) for a path, or None when nothing serves it."""
    if path in STORAGE_ROUTES:
        return (*STORAGE_ROUTES[path], {})
    if path.startswith("/storage/gcs/"):
        return "upload", None, {"PUT": storage_api.put_signed}, {}
    if path.startswith("/files/"):
        return "download", None, {"GET": storage_api.download, "HEAD": storage_api.download}, {}
    if match := REQUEST_URL.match(path):
        params = match.groupdict()
        stage, methods = QUEUE_ACTIONS[params.pop("action")]
        return stage, "key", methods, params
    if path.count("/") >= 2 and "" not in path[1:].split("/"):
        return "submit", "key", {"POST": queue_api.submit}, {}
    return None


class TLSServer(ThreadingHTTPServer):
    """ThreadingHTTPServer over TLS, handshaking in each connection's own thread."""

    daemon_threads = True
    # socketserver's default backlog of 5 drops SYNs when a batch connects at once, and the
    # client then waits a full second to retry: a real front end queues far more.
    request_queue_size = 128
    block_on_close = False  # stop() closes live connections itself, then joins their threads

    def __init__(self, address, context: ssl.SSLContext, standin):
        self.standin = standin
        self.connections: dict[socket.socket, threading.Thread] = {}
        self.connections_lock = threading.Lock()
        super().__init__(address, Handler)
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )

    def server_bind(self):
        """Bind without HTTPServer's reverse DNS lookup of the address."""
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        """Log a connection that failed (handshake, reset, timeout) without a traceback dump."""
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self, timeout: float) -> None:
        """Shut down every live connection and wait for its thread to end."""
        with self.connections_lock:
            live = dict(self.connections)
        for sock in live:
            try:
                # The plain socket's shutdown wakes a reader blocked in SSL_read; SSLSocket's
                # own shutdown would tear the TLS object out from under that reader.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in live.values():
            thread.join(timeout)


class Handler(BaseHTTPRequestHandler):
    """One connection: parse each request, apply faults, route it, stall if asked, answer."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; like nginx (tcp_nodelay on), do not let
    # Nagle's algorithm hold the body back for the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "fal-standin"
    sys_version = ""
    timeout = 60

    def setup(self):
        """Register and number the connection, and finish the TLS handshake."""
        with self.server.connections_lock:
            self.server.connections[self.request] = threading.current_thread()
        self.connection_number = next(self.server.standin.connection_numbers)
        self.server.standin.connections_opened = self.connection_number
        try:
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        except BaseException:
            self._forget()
            raise
        super().setup()

    def finish(self):
        """Flush and forget the connection."""
        try:
            super().finish()
        finally:
            self._forget()

    def _forget(self):
        """Drop the connection from the server's live set."""
        with self.server.connections_lock:
            self.server.connections.pop(self.request, None)

    def log_message(self, format, *args):
        """Send the access log to logging instead of stderr."""
        logger.debug("%s %s", self.address_string(), format % args)

    def _serve(self):
        """Answer one request."""
        standin = self.server.standin
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        call = Call(self.command, url.path, dict(parse_qsl(url.query)), self.headers, body)
        arrival = {"method": call.method, "path": call.path, "at": time.monotonic()}
        stage, reply = self._answer(standin, call)
        arrival.update(stage=stage, connection=self.connection_number)
        standin.record("arrivals", arrival)
        seen = {
            "method": call.method,
            "path": call.path,
            "stage": stage,
            "connection": self.connection_number,
            # The scheme alone (Key, Bearer, ...): a credential is never recorded.
            "auth_scheme": (call.headers.get("Authorization") or "").partition(" ")[0] or None,
            "store_io": call.headers.get("X-Fal-Store-IO"),
        }
        if stage is not None and standin.faults.take_drop(stage):
            standin.record("calls", seen)
            self.close_connection = True
            return
        standin.faults.stall(stage)
        standin.record("calls", {**seen, "status": reply.status})
        if stage is not None and standin.faults.take_cut(stage):
            self._write(reply, body_bytes=len(reply.body) // 2)
            self.close_connection = True
            return
        self._write(reply)

    def _answer(self, standin, call: Call) -> tuple[str | None, Reply]:
        """Return the stage of a call and the reply to it."""
        found = route(call.path)
        if found is None:
            return None, detail_reply(404, "Not Found")
        stage, auth, methods, params = found
        if call.method not in methods:
            return stage, detail_reply(405, "Method Not Allowed")
        fault = standin.faults.take_failure(stage)
        if fault is not None:
            return stage, fault
        if auth == "key" and (problem := standin.check_key(call.headers.get("Authorization"))):
            return stage, problem
        call.params = params
        try:
            return stage, methods[call.method](standin, call)
        except Exception:
            logger.exception("stand-in route for %s %s failed", call.method, call.path)
            return stage, detail_reply(500, HTTPStatus.INTERNAL_SERVER_ERROR.phrase)

    def _write(self, reply: Reply, body_bytes: int | None = None) -> None:
        """Write a reply (only `body_bytes` of its body, if given: the headers still announce
        all of it); a client that went away meanwhile only ends the connection."""
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body[:body_bytes])
        except OSError:
            logger.debug("client left before the reply to %s", self.path, exc_info=True)
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve
