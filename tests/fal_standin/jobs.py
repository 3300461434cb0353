"""The clock-driven life of queued requests: IN_QUEUE, then IN_PROGRESS, then COMPLETED."""

import dataclasses
import math
import threading
import time
from collections import deque
from datetime import UTC, datetime

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"

# What the runner prints while it works, at fractions of its processing time.
LOG_SCRIPT = (
    (0.0, "INFO", "Starting Tripo3D image-to-3D task"),
    (0.05, "INFO", "Downloading input image"),
    (0.1, "INFO", "Generating mesh 0%"),
    (0.25, "INFO", "Generating mesh 20%"),
    (0.4, "INFO", "Generating mesh 40%"),
    (0.55, "INFO", "Generating mesh 60%"),
    (0.7, "INFO", "Generating mesh 80%"),
    (0.8, "INFO", "Generating mesh 100%"),
    (0.85, "INFO", "Applying texture"),
    (0.95, "INFO", "Uploading model"),
)
FINAL_LOG = {
    "ok": ("INFO", "Task completed"),
    "missing_mesh": ("INFO", "Task completed"),
    "bad_glb": ("INFO", "Task completed"),
    "model_error": ("ERROR", "Tripo3D task failed"),
    "invalid": ("ERROR", "Input validation failed"),
}


@dataclasses.dataclass
class Job:
    """One queued request and the times it moved through its states."""

    request_id: str
    task_id: str
    app: str  # "owner/alias", the part of the model id that request URLs keep
    submitted_at: float
    ready_at: float  # when a runner would take it if a concurrency slot is free
    latency: float  # processing seconds
    ahead: int  # other accounts' requests ahead of it at submission, drained while queued
    outcome: str  # a result mode, or "invalid" when validation is left to the runner
    errors: list = dataclasses.field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None
    cancelled: bool = False

    @property
    def state(self) -> str:
        """Return the queue status word for this job."""
        if self.finished_at is not None:
            return COMPLETED
        return IN_PROGRESS if self.started_at is not None else IN_QUEUE


class JobBoard:
    """All jobs in submission order, advanced lazily to the clock's present on every look."""

    def __init__(self, concurrency: int | None = None, clock=time.monotonic):
        self.concurrency = concurrency
        self._clock = clock
        self._wall_offset = time.time() - clock()
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._last_event = -math.inf

    def now(self) -> float:
        """Return the board's clock reading."""
        return self._clock()

    def add(self, job: Job) -> None:
        """Put a new job at the end of the queue."""
        with self._lock:
            self._advance(self._clock())
            self._jobs[job.request_id] = job
            self._waiting.append(job)

    def view(self, request_id: str) -> tuple[Job, int, float] | None:
        """Return a copy of a job, its queue position and the time of the look, or None."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            job = self._jobs.get(request_id)
            if job is None:
                return None
            return dataclasses.replace(job), self._position(job, now), now

    def cancel(self, request_id: str) -> str:
        """Cancel a job still in the queue; return cancelled, in_progress, completed or missing."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            job = self._jobs.get(request_id)
            if job is None:
                return "missing"
            if job.state != IN_QUEUE:
                return "in_progress" if job.state == IN_PROGRESS else "completed"
            self._waiting.remove(job)
            job.cancelled = True
            job.outcome = "cancelled"
            job.finished_at = now
            return "cancelled"

    def logs(self, job: Job, now: float) -> list[dict]:
        """Return the log entries the job's runner has printed by `now`."""
        if job.started_at is None or job.cancelled:
            return []
        if job.outcome == "invalid":
            script = [(0.0, *LOG_SCRIPT[0][1:])]
        else:
            script = list(LOG_SCRIPT)
        script.append((1.0, *FINAL_LOG[job.outcome]))
        entries = []
        for fraction, level, message in script:
            at = job.started_at + fraction * job.latency
            if at > now or (fraction == 1.0 and job.finished_at is None):
                break
            timestamp = datetime.fromtimestamp(at + self._wall_offset, UTC).isoformat()
            entries.append(
                {"message": message, "level": level, "source": "USER", "timestamp": timestamp}
            )
        return entries

    def _position(self, job: Job, now: float) -> int:
        """Return how many requests are ahead of a queued job, counting other accounts'."""
        if job.state != IN_QUEUE:
            return 0
        waited = job.ready_at - job.submitted_at
        remaining = job.ready_at - now
        others = math.ceil(job.ahead * remaining / waited) if remaining > 0 and waited > 0 else 0
        return self._waiting.index(job) + others

    def _advance(self, now: float) -> None:
        """Replay starts and finishes, in time order, that happened up to `now`."""
        while True:
            finish_at = min((j.started_at + j.latency for j in self._running), default=math.inf)
            start_at = math.inf
            free = self.concurrency is None or len(self._running) < self.concurrency
            if self._waiting and free:
                start_at = max(self._waiting[0].ready_at, self._last_event)
            if finish_at <= now and finish_at <= start_at:
                job = min(self._running, key=lambda j: j.started_at + j.latency)
                self._running.remove(job)
                job.finished_at = finish_at
                self._last_event = finish_at
            elif start_at <= now:
                job = self._waiting.popleft()
                job.started_at = start_at
                self._running.append(job)
                self._last_event = start_at
            else:
                return
