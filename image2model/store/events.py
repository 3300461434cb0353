"""Job events: rows in SQLite (replayable by id) plus an in-process notification for streams."""

import json
import threading
import time


def record(conn, job_id, event_type, payload):
    """Insert an event row; the caller holds the transaction and notifies after commit."""
    cursor = conn.execute(
        "INSERT INTO events (job_id, type, payload, created_at) VALUES (?, ?, ?, ?)",
        (job_id, event_type, json.dumps(payload, sort_keys=True), time.time()),
    )
    return cursor.lastrowid


def after(conn, job_id, last_id, limit=500):
    """Return the job's events with an id above `last_id`, oldest first."""
    return conn.execute(
        "SELECT id, type, payload FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
        (job_id, last_id, limit),
    ).fetchall()


class Notifier:
    """Wakes waiting streams when any event is written in this process."""

    def __init__(self):
        self._condition = threading.Condition()
        self._version = 0

    @property
    def version(self):
        """Return the count of notifications so far."""
        with self._condition:
            return self._version

    def notify(self):
        """Wake every waiter."""
        with self._condition:
            self._version += 1
            self._condition.notify_all()

    def wait(self, seen_version, timeout):
        """Block until a notification newer than `seen_version` or the timeout; return version."""
        with self._condition:
            self._condition.wait_for(lambda: self._version != seen_version, timeout=timeout)
            return self._version


def init_app(app):
    """Create the app's notifier."""
    app.extensions["image2model.notifier"] = Notifier()


def notifier(app):
    """Return the app's notifier."""
    return app.extensions["image2model.notifier"]


def format_sse(event_id, payload):
    """Format one server-sent event with its id."""
    return f"id: {event_id}\ndata: {json.dumps(payload, sort_keys=True)}\n\n"
