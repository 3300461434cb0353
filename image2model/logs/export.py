"""Log exports: a date range of chosen log types written on the pool as JSON, CSV or text."""

import contextlib
import csv
import heapq
import io
import json
import logging
import os
import re
import threading
import time
from datetime import UTC, date, datetime, timedelta

from image2model.clock import iso
from image2model.errors import ApiError
from image2model.files import storage
from image2model.files.tree import MB
from image2model.logs import setup as log_setup
from image2model.logs.files import EXPORTS_DIR, EntryReader, files_of_type, resolve_type
from image2model.pool import get_pool
from image2model.store import jobs

logger = logging.getLogger(__name__)

FORMATS = {"json": "application/json", "csv": "text/csv", "txt": "text/plain"}
EXPORT_ID = re.compile(r"^export_[0-9a-f]{24}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_RANGE_DAYS = 366
KEPT_RECORDS = 200
SCAN_BYTES_PER_SECOND = 20 * MB
CSV_COLUMNS = ("timestamp", "log_type", "level", "logger", "message", "exception", "fields")
FIXED_FIELDS = frozenset(CSV_COLUMNS)


def parse_date(value, field, required=True):
    """Return a `YYYY-MM-DD` value as a date; absent: today in UTC unless required; else 400."""
    if value is None or value == "":
        if required:
            raise ApiError(
                "VALIDATION_ERROR", f"{field} is required (YYYY-MM-DD)", {"field": field}
            )
        return datetime.now(UTC).date()
    try:
        if not DATE.match(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(
            "VALIDATION_ERROR",
            f"{field} must be a date in YYYY-MM-DD format",
            {field: value[:40], "format": "YYYY-MM-DD"},
        ) from None


def parse_types(value):
    """Return the log types of a comma-separated list (aliases allowed); absent: all of them."""
    if value is None or value.strip() == "":
        return list(log_setup.LOG_TYPES)
    chosen = []
    for item in value.split(","):
        if not item.strip():
            raise ApiError("VALIDATION_ERROR", "log_types has an empty item", {"log_types": value})
        log_type = resolve_type(item.strip(), "log_types")
        if log_type not in chosen:
            chosen.append(log_type)
    return chosen


def _registry(app):
    """Return the app's export records and their lock."""
    return app.extensions.setdefault(
        "image2model.log_exports", {"lock": threading.Lock(), "records": {}}
    )


def _update(app, export_id, **fields):
    """Change an export's record and return a copy of it (None once it was dropped)."""
    registry = _registry(app)
    with registry["lock"]:
        record = registry["records"].get(export_id)
        if record is None:
            return None
        record.update(fields)
        return dict(record)


def export_path(app, export_id, fmt):
    """Return the file of an export (the id is checked by the caller)."""
    directory = storage.inside(log_setup.log_directory(app), EXPORTS_DIR)
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, f"{export_id}.{fmt}")


def start_export(app, start, end, log_types, fmt):
    """Record a new export and hand it to the pool; return its id, status and URLs."""
    if end < start:
        raise ApiError(
            "VALIDATION_ERROR",
            "end_date must not be before start_date",
            {"start_date": start.isoformat(), "end_date": end.isoformat()},
        )
    if (end - start).days >= MAX_RANGE_DAYS:
        raise ApiError(
            "VALIDATION_ERROR",
            f"An export covers at most {MAX_RANGE_DAYS} days",
            {"start_date": start.isoformat(), "end_date": end.isoformat()},
        )
    export_id = jobs.new_id("export")
    now = time.time()
    directory = log_setup.log_directory(app)
    scan_bytes = sum(info.st_size for t in log_types for _path, info in files_of_type(directory, t))
    record = {
        "export_id": export_id,
        "status": "started",
        "format": fmt,
        "log_types": log_types,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "created": iso(now),
        "completed": None,
        "entries": None,
        "size_bytes": None,
        "error": None,
    }
    registry = _registry(app)
    with registry["lock"]:
        records = registry["records"]
        # One export at a time: each may scan every log, and the pool also runs generations.
        if any(r["status"] in ("started", "running") for r in records.values()):
            raise ApiError(
                "RATE_LIMIT_EXCEEDED",
                "An export is already running: wait for it to finish",
                {},
                429,
                headers={"Retry-After": "5"},
            )
        records[export_id] = record
        for old_id in list(records)[:-KEPT_RECORDS]:
            del records[old_id]  # the file stays; its status is then read from the disk
    try:
        get_pool(app).submit(run_export, app, export_id)
    except RuntimeError:
        _update(app, export_id, status="failed", error="The server is shutting down")
        raise ApiError("SERVICE_UNAVAILABLE", "The server is shutting down", {}, 503) from None
    return {
        "export_id": export_id,
        "status": (_update(app, export_id) or record)["status"],
        "estimated_completion": iso(now + max(1.0, scan_bytes / SCAN_BYTES_PER_SECOND)),
        "download_url": f"/api/v1/logs/export/{export_id}/download",
        "status_url": f"/api/v1/logs/export/{export_id}",
    }


def _entries(directory, record):
    """Yield `(epoch, entry with its log_type)` of the export's range, merged by time."""
    start = datetime.fromisoformat(record["start_date"]).replace(tzinfo=UTC).timestamp()
    end = (
        datetime.fromisoformat(record["end_date"]).replace(tzinfo=UTC) + timedelta(days=1)
    ).timestamp()

    def typed(log_type):
        """Yield a type's entries in the range, each marked with its type."""
        for epoch, entry in EntryReader().entries(files_of_type(directory, log_type), start, end):
            yield epoch, {"log_type": log_type, **entry}

    return heapq.merge(*(typed(t) for t in record["log_types"]), key=lambda item: item[0])


@contextlib.contextmanager
def _text(handle):
    """Wrap a binary file for text writing, leaving the file open for its owner."""
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    try:
        yield text
        text.flush()
    finally:
        text.detach()


def _write_json(text, record, items):
    """Write one JSON document: the export's header and its entries; return their count."""
    header = {key: record[key] for key in ("export_id", "start_date", "end_date", "log_types")}
    text.write(json.dumps(header)[:-1] + ', "entries": [')
    count = 0
    for _epoch, entry in items:
        text.write(("," if count else "") + "\n" + json.dumps(entry, ensure_ascii=False))
        count += 1
    text.write(f'\n], "entry_count": {count}}}\n')
    return count


def _extra(entry):
    """Return an entry's fields beyond the fixed columns."""
    return {key: value for key, value in entry.items() if key not in FIXED_FIELDS}


def _write_csv(text, _record, items):
    """Write CSV with one row per entry, extra fields as JSON; return the count."""
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for _epoch, entry in items:
        extra = _extra(entry)
        row = [entry.get(column, "") for column in CSV_COLUMNS[:-1]]
        writer.writerow([*row, json.dumps(extra, ensure_ascii=False) if extra else ""])
        count += 1
    return count


def _write_txt(text, _record, items):
    """Write one readable line per entry, tracebacks indented below it; return the count."""
    count = 0
    for _epoch, entry in items:
        extra = _extra(entry)
        line = (
            f"{entry.get('timestamp')} {str(entry.get('level')):<8} {entry['log_type']:<13}"
            f" {entry.get('logger')}: {entry.get('message')}"
        )
        text.write(line + (f" {json.dumps(extra, ensure_ascii=False)}" if extra else "") + "\n")
        for exception_line in str(entry.get("exception") or "").splitlines():
            text.write(f"    {exception_line}\n")
        count += 1
    return count


WRITERS = {"json": _write_json, "csv": _write_csv, "txt": _write_txt}


def run_export(app, export_id):
    """Write one export (a pool task): its one boundary records `completed` or `failed`."""
    record = _update(app, export_id, status="running")
    if record is None:
        return  # dropped from memory before it ran: nothing asked for it any more
    try:
        path = export_path(app, export_id, record["format"])
        items = _entries(log_setup.log_directory(app), record)
        counted = []

        def write(handle):
            with _text(handle) as text:
                counted.append(WRITERS[record["format"]](text, record, items))

        storage.atomic_write(path, write)
        _update(
            app,
            export_id,
            status="completed",
            completed=iso(time.time()),
            entries=counted[0],
            size_bytes=os.path.getsize(path),
        )
        logger.info("Log export %s written: %d entries", export_id, counted[0])
    except Exception:
        logger.exception("Log export %s failed", export_id)
        _update(app, export_id, status="failed", error="The export could not be written")


def _find(app, export_id):
    """Return an export's record (from memory, else from its file on disk), or raise 404."""
    if EXPORT_ID.match(export_id):
        registry = _registry(app)
        with registry["lock"]:
            record = registry["records"].get(export_id)
        if record is not None:
            return dict(record)
        for fmt in FORMATS:
            path = export_path(app, export_id, fmt)
            if os.path.isfile(path):
                return {"export_id": export_id, "status": "completed", "format": fmt}
    raise ApiError("NOT_FOUND", "No such export", {"export_id": export_id[:80]}, 404)


def export_status(app, export_id):
    """Return an export's status, with its size and download URL once completed."""
    record = _find(app, export_id)
    if record["status"] == "completed":
        path = export_path(app, export_id, record["format"])
        with contextlib.suppress(FileNotFoundError):
            record["size_bytes"] = os.path.getsize(path)
            record["size_mb"] = round(record["size_bytes"] / MB, 3)
        record["download_url"] = f"/api/v1/logs/export/{export_id}/download"
    return record


def export_file(app, export_id):
    """Return `(path, mime type, download name)` of a completed export; 409 before, 410 after."""
    record = _find(app, export_id)
    if record["status"] != "completed":
        raise ApiError(
            "CONFLICT",
            "The export is not ready",
            {"export_id": export_id, "status": record["status"]},
            409,
        )
    path = export_path(app, export_id, record["format"])
    if not os.path.isfile(path):
        raise ApiError("GONE", "The export file was removed", {"export_id": export_id}, 410)
    return path, FORMATS[record["format"]], f"{export_id}.{record['format']}"
