"""Server-sent events for one job: replay from an event id, then push on notification."""

import json
import threading
import time

from image2model.errors import ApiError
from image2model.pool import get_pool
from image2model.store import db, events

RETRY_MS = 3000
TERMINAL_EVENTS = ("completed", "error")
PAGE = 500


def already_ended(conn, job_id, last_id):
    """Return True if the client has already received the job's terminal event."""
    row = conn.execute(
        "SELECT MIN(id) FROM events WHERE job_id = ? AND type IN (?, ?)",
        (job_id, *TERMINAL_EVENTS),
    ).fetchone()
    return row[0] is not None and row[0] <= last_id


class StreamSlots:
    """Counts open streams, so one key cannot hold every server thread with them."""

    def __init__(self, per_owner, total):
        self.per_owner = per_owner
        self.total = total
        self._open = {}
        self._lock = threading.Lock()

    def acquire(self, owner):
        """Take a slot for `owner` and return its release function, or raise 429."""
        with self._lock:
            if sum(self._open.values()) >= self.total or self._open.get(owner, 0) >= self.per_owner:
                raise ApiError(
                    "RATE_LIMIT_EXCEEDED",
                    "Too many open event streams; close one or poll the status endpoint",
                    {"max_streams_per_key": self.per_owner},
                    status=429,
                    headers={"Retry-After": "5"},
                )
            self._open[owner] = self._open.get(owner, 0) + 1
        released = threading.Event()

        def release():
            if released.is_set():
                return
            released.set()
            with self._lock:
                self._open[owner] -= 1
                if not self._open[owner]:
                    del self._open[owner]

        return release


def slots(app):
    """Return the app's stream slots, created on first use."""
    found = app.extensions.get("image2model.sse_slots")
    if found is None:
        found = app.extensions["image2model.sse_slots"] = StreamSlots(
            int(app.config["SSE_MAX_STREAMS_PER_KEY"]), int(app.config["SSE_MAX_STREAMS"])
        )
    return found


def stream(app, job_id, task_id, last_id, timeout, heartbeat):
    """Yield the job's events after `last_id` until its terminal event or the timeout."""
    notifier = events.notifier(app)
    stopping = get_pool(app).stopping
    conn = db.connect(db.database_path(app))
    deadline = time.monotonic() + timeout
    next_heartbeat = time.monotonic() + heartbeat
    try:
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            # Read the version before the rows, so a change between the two is not missed.
            seen_version = notifier.version
            rows = events.after(conn, job_id, last_id, PAGE)
            # The events of one look go out as one chunk: one write, however many there are.
            chunk, ended = [], False
            for row in rows:
                payload = {
                    **json.loads(row["payload"]),
                    "type": row["type"],
                    "task_id": task_id,
                    "job_id": job_id,
                }
                last_id = row["id"]
                chunk.append(events.format_sse(row["id"], payload))
                if row["type"] in TERMINAL_EVENTS:
                    ended = True
                    break
            if chunk:
                yield "".join(chunk)
            if ended:
                return
            if len(rows) == PAGE:
                continue  # more history to replay before waiting
            now = time.monotonic()
            if now >= deadline:
                yield ": stream timeout reached\n\n"
                return
            if now >= next_heartbeat:
                yield ": heartbeat\n\n"
                next_heartbeat = now + heartbeat
            if stopping.is_set():
                return  # the server is shutting down; the client resumes with Last-Event-ID
            # begin_shutdown sets `stopping` before it notifies, so this wait cannot miss it.
            notifier.wait(seen_version, timeout=min(deadline, next_heartbeat) - now)
    finally:
        conn.close()
