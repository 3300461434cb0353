"""Faults injected per stage at runtime: failure replies, dropped connections, hangs."""

import json
import threading
import time
from collections import deque
from http import HTTPStatus

from .wire import Reply

STAGES = ("submit", "status", "result", "cancel", "upload", "token", "download")


class Faults:
    """Thread-safe pending faults, consumed by the calls of each stage in order."""

    def __init__(self):
        self._changed = threading.Condition()
        self._released = False
        self._failures: dict[str, deque[list]] = {stage: deque() for stage in STAGES}
        self._drops = dict.fromkeys(STAGES, 0)
        self._cuts = dict.fromkeys(STAGES, 0)
        self._hangs = dict.fromkeys(STAGES, 0.0)

    def fail(self, stage, status, times=1, body=None, headers=None) -> None:
        """Queue a failure reply for the next `times` calls of a stage."""
        check_stage(stage)
        if times < 1:
            raise ValueError("times must be at least 1")
        if body is None:
            body = {"detail": HTTPStatus(status).phrase}
        if isinstance(body, str | bytes):
            payload = body.encode() if isinstance(body, str) else body
            content_type = "text/html; charset=utf-8"
        else:
            payload, content_type = json.dumps(body).encode(), "application/json"
        reply = Reply(status, payload, content_type, dict(headers or {}))
        with self._changed:
            self._failures[stage].append([reply, times])

    def drop(self, stage, times=1) -> None:
        """Drop the connection of the next `times` calls of a stage."""
        check_stage(stage)
        with self._changed:
            self._drops[stage] += times

    def cut(self, stage, times=1) -> None:
        """Cut the reply of the next `times` calls of a stage off inside its body."""
        check_stage(stage)
        with self._changed:
            self._cuts[stage] += times

    def hang(self, stage, seconds) -> None:
        """Hold every answer of a stage for `seconds`; 0 or None ends it and frees held ones."""
        check_stage(stage)
        with self._changed:
            self._hangs[stage] = float(seconds or 0.0)
            self._changed.notify_all()

    def clear(self) -> None:
        """Forget every pending failure, drop and hang."""
        with self._changed:
            for stage in STAGES:
                self._failures[stage].clear()
                self._drops[stage] = 0
                self._cuts[stage] = 0
                self._hangs[stage] = 0.0
            self._changed.notify_all()

    def arm(self) -> None:
        """Let hangs hold answers again after release()."""
        with self._changed:
            self._released = False

    def release(self) -> None:
        """Free every held answer and hold no more, for shutdown."""
        with self._changed:
            self._released = True
            self._changed.notify_all()

    def take_failure(self, stage: str) -> Reply | None:
        """Return the failure reply due for this call of a stage, if one is pending."""
        with self._changed:
            pending = self._failures[stage]
            if not pending:
                return None
            entry = pending[0]
            entry[1] -= 1
            if entry[1] <= 0:
                pending.popleft()
            return entry[0]

    def take_drop(self, stage: str) -> bool:
        """Tell whether this call of a stage is to be dropped, counting it off."""
        return self._take(self._drops, stage)

    def take_cut(self, stage: str) -> bool:
        """Tell whether this call's reply is to be cut off inside its body, counting it off."""
        return self._take(self._cuts, stage)

    def _take(self, counts: dict[str, int], stage: str) -> bool:
        """Count one pending fault of a stage off; tell whether there was one."""
        with self._changed:
            if counts[stage] <= 0:
                return False
            counts[stage] -= 1
            return True

    def stall(self, stage: str | None) -> None:
        """Hold the current answer while its stage hangs, until the time is up or it is cleared."""
        if stage is None:
            return
        with self._changed:
            deadline = time.monotonic() + self._hangs[stage]
            while self._hangs[stage] and not self._released:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)


def check_stage(stage: str) -> None:
    """Reject an unknown stage name."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
