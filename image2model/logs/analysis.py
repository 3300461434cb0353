"""What the logs say: levels, error and request patterns, timings, a day's summary, health."""

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime

from image2model.clock import iso
from image2model.files.tree import MB
from image2model.logs import setup as log_setup
from image2model.logs.files import EntryReader, entry_time, files_of_type

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ERROR_LEVELS = ("ERROR", "CRITICAL")
# worker_errors repeats worker's warnings and errors, so summaries leave it out.
DISTINCT_TYPES = ("application", "access", "worker")
TOP_PATTERNS = 20
TOP_ENDPOINTS = 10
RECENT_SECONDS = 3600
TAIL_BYTES = 64 * 1024
NORMALISERS = (
    (re.compile(r"\b(job|task|file|batch|export)_[0-9A-Za-z_-]+"), r"\1_<id>"),
    (
        re.compile(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        "<uuid>",
    ),
    (re.compile(r"\b[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\b\d+(?:\.\d+)?\b"), "<n>"),
)


def normalise(message):
    """Return the shape of a message: its first line with ids, numbers and quoted text replaced."""
    lines = str(message or "").strip().splitlines()
    text = lines[0] if lines else ""
    for pattern, replacement in NORMALISERS:
        text = pattern.sub(replacement, text)
    return text[:200] or "(empty message)"


class RequestFigures:
    """Counts requests by route and their response times, from access entries."""

    def __init__(self):
        self.routes = Counter()
        self.timed = 0
        self.total_ms = 0.0
        self.max_ms = 0.0

    def add(self, entry):
        """Count one access entry."""
        self.routes[entry.get("route") or "(no route)"] += 1
        duration = entry.get("duration_ms")
        if isinstance(duration, int | float) and not isinstance(duration, bool):
            self.timed += 1
            self.total_ms += duration
            self.max_ms = max(self.max_ms, duration)

    def metrics(self):
        """Return the average and maximum response time."""
        return {
            "avg_response_time_ms": round(self.total_ms / self.timed, 3) if self.timed else 0.0,
            "max_response_time_ms": round(self.max_ms, 3),
            "requests": sum(self.routes.values()),
        }


def analyze(directory, log_type, hours_back, now=None):
    """Return levels and error patterns of one log type, and request figures of the access log."""
    now = time.time() if now is None else now
    since = now - hours_back * 3600
    reader = EntryReader()
    levels = Counter(dict.fromkeys(LEVELS, 0))
    patterns = Counter()
    requests = RequestFigures()
    lines = 0
    for _epoch, entry in reader.entries(files_of_type(directory, log_type), since, now + 1):
        lines += 1
        tally(entry, log_type, levels, patterns, requests)
    if log_type != "access":
        access_reader = EntryReader()
        for _epoch, entry in access_reader.entries(files_of_type(directory, "access"), since):
            requests.add(entry)
    return {
        "log_type": log_type,
        "time_range": {"start": iso(since), "end": iso(now)},
        "log_levels": dict(levels),
        "error_patterns": dict(patterns.most_common(TOP_PATTERNS)),
        "request_patterns": dict(requests.routes.most_common()),
        "performance_metrics": requests.metrics(),
        "lines_analyzed": lines,
        "unparsed_lines": reader.unparsed,
    }


def tally(entry, log_type, levels, patterns, requests):
    """Count one entry's level, its error pattern, and (access log) its request figures."""
    level = str(entry.get("level", "")).upper()
    levels[level] += 1
    if level in ERROR_LEVELS:
        patterns[normalise(entry.get("message"))] += 1
    if log_type == "access":
        requests.add(entry)


def daily_summary(directory, day):
    """Return one UTC day's entry counts, top endpoints and error summary (all log types)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    end = start + 86400
    reader = EntryReader()
    by_type, levels, patterns = Counter(), Counter(), Counter()
    requests = RequestFigures()
    for log_type in DISTINCT_TYPES:
        for _epoch, entry in reader.entries(files_of_type(directory, log_type), start, end):
            by_type[log_type] += 1
            tally(entry, log_type, levels, patterns, requests)
    return {
        "date": day.isoformat(),
        "total_entries": sum(by_type.values()),
        "error_count": sum(levels[level] for level in ERROR_LEVELS),
        "warning_count": levels["WARNING"],
        "by_type": {log_type: by_type[log_type] for log_type in DISTINCT_TYPES},
        "top_endpoints": [
            {"endpoint": route, "count": count}
            for route, count in requests.routes.most_common(TOP_ENDPOINTS)
        ],
        "error_summary": [
            f"{pattern} ({count})" for pattern, count in patterns.most_common(TOP_ENDPOINTS)
        ],
        "performance_metrics": requests.metrics(),
    }


def _writable(directory):
    """Tell whether a file can be created in the directory."""
    try:
        descriptor, path = tempfile.mkstemp(prefix=".health-", dir=directory)
    except OSError:
        return False
    os.close(descriptor)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return True


def _last_entry_time(path):
    """Return the timestamp of the last readable entry of a file, or None."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - TAIL_BYTES))
            tail = handle.read()
    except FileNotFoundError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            epoch = entry_time(json.loads(line))
        except ValueError:
            continue
        if epoch is not None:
            return epoch
    return None


def rotation_working(directory):
    """Tell whether every log type has a size-rotated handler writing to its own file."""
    active = log_setup.active(directory)
    if active is None:
        return False
    for log_type in log_setup.LOG_TYPES:
        handler = active.handlers.get(log_type)
        if handler is None or handler.maxBytes <= 0 or handler.backupCount < 1:
            return False
        with handler.lock:
            if not handler.writes_to_its_path():
                return False
        with contextlib.suppress(FileNotFoundError):
            if os.path.getsize(active.path(log_type)) > 2 * handler.maxBytes:
                return False
    return True


def health(directory, min_free_mb, now=None):
    """Return the logging system's state: writable, disk, rotation, recent errors, last entry."""
    now = time.time() if now is None else now
    writable = _writable(directory)
    disk_ok = shutil.disk_usage(directory).free / MB >= min_free_mb
    rotating = rotation_working(directory)
    reader = EntryReader()
    recent_errors = sum(
        1
        for log_type in ("application", "worker")
        for _epoch, entry in reader.entries(
            files_of_type(directory, log_type), now - RECENT_SECONDS
        )
        if str(entry.get("level", "")).upper() in ERROR_LEVELS
    )
    last_times = [
        _last_entry_time(os.path.join(directory, f"{log_type}.log"))
        for log_type in log_setup.LOG_TYPES
    ]
    last_times = [epoch for epoch in last_times if epoch is not None]
    if not writable:
        status = "critical"
    else:
        status = "healthy" if disk_ok and rotating else "warning"
    return {
        "status": status,
        "log_directory_writable": writable,
        "disk_space_available": disk_ok,
        "rotation_working": rotating,
        "recent_errors": recent_errors,
        "recent_errors_window_seconds": RECENT_SECONDS,
        "last_log_entry": iso(max(last_times)) if last_times else None,
    }
