"""One step of one generation: the state operations a generator may call while it runs."""

import json
import logging
import os
import time

from image2model.store import events, jobs

logger = logging.getLogger(__name__)


class GenerationRun:
    """One step of one generation, with the state operations a generator may call."""

    def __init__(self, app, conn, row, due_at=None):
        self.app = app
        self.conn = conn
        self.row = row
        self.id = row["id"]
        self.state = row["state"]  # as this step last moved it; `row` is as the step began
        self.options = json.loads(row["options"])
        self.release_fields = {}
        self.keep_claim = False
        self.ended = False  # this step moved it to a terminal state, which released the claim
        self.began = time.time()
        self.due_at = row["next_run_at"] if due_at is None else due_at

    @property
    def image_path(self):
        """Return the absolute path of the uploaded image."""
        return os.path.join(self.app.instance_path, self.row["stored_path"])

    def _notify(self, changed):
        events.notifier(self.app).notify()
        return changed

    def transition(self, state, progress=None, log_lines=(), **fields):
        """Move to a new state (ignored once terminal) and wake streams; skip a no-op."""
        row = self.row
        # How many FAL log lines were read is bookkeeping: no change a client would see.
        bookkeeping = {name: fields.pop(name) for name in ("fal_logs_seen",) if name in fields}
        if (
            state == row["state"]
            and set(fields) <= {"message"}
            and fields.get("message", row["message"]) == row["message"]
            and (progress is None or progress <= row["progress"])
        ):
            if not log_lines:
                return False
            # New log lines alone: log events, without a progress event that repeats the last.
            return self._notify(jobs.log(self.conn, self.id, log_lines, **bookkeeping))
        changed = jobs.transition(
            self.conn, self.id, state, progress, log_lines, **fields, **bookkeeping
        )
        self.ended = self.ended or (changed and state in jobs.TERMINAL)
        if changed and state != self.state:
            logger.info("Generation %s of %s: %s -> %s", self.id, row["job_id"], self.state, state)
            self.state = state
        return self._notify(changed)

    def log(self, *messages, progress=None, **fields):
        """Record log lines, optional progress and fields."""
        jobs.log(self.conn, self.id, messages, progress, **fields)
        self._notify(True)

    def record(self, **fields):
        """Store fields of a still-running generation at once; return False if it has ended."""
        return jobs.log(self.conn, self.id, (), **fields)

    def run_again_in(self, seconds, **fields):
        """Schedule the next step; fields are written with the release of the claim."""
        self._schedule(time.time() + seconds, fields)

    def poll_again(self, interval, **fields):
        """Schedule the next poll `interval` after this one was due, so polls keep their rate."""
        next_run_at = self.due_at + interval
        if next_run_at <= time.time():
            # More than an interval late (a busy pool, a restart): no burst to catch up.
            next_run_at = self.began + interval
        self._schedule(next_run_at, fields)

    def _schedule(self, next_run_at, fields):
        # With nothing to write, the claim is kept and the next step timed in memory; a step
        # that changes fields releases its claim with them, in one transaction.
        self.release_fields = {"next_run_at": next_run_at, **fields}
        self.keep_claim = not fields

    def fail(self, code, message):
        """End the generation as failed with a code and a human message."""
        logger.warning("Generation %s failed: %s %s", self.id, code, message)
        return self.transition("failed", error_code=code, error_message=message)
