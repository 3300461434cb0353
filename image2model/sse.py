"""Server-sent events for one job: replay from an event id, then push on notification."""

import json
import time

from image2model import db, events

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


def stream(app, job_id, task_id, last_id, timeout, heartbeat):
    """Yield the job's events after `last_id` until its terminal event or the timeout."""
    notifier = events.notifier(app)
    conn = db.connect(db.database_path(app))
    deadline = time.monotonic() + timeout
    next_heartbeat = time.monotonic() + heartbeat
    try:
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            # Read the version before the rows, so a change between the two is not missed.
            seen_version = notifier.version
            rows = events.after(conn, job_id, last_id, PAGE)
            for row in rows:
                payload = {
                    **json.loads(row["payload"]),
                    "type": row["type"],
                    "task_id": task_id,
                    "job_id": job_id,
                }
                last_id = row["id"]
                yield events.format_sse(row["id"], payload)
                if row["type"] in TERMINAL_EVENTS:
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
            notifier.wait(seen_version, timeout=min(deadline, next_heartbeat) - now)
    finally:
        conn.close()
