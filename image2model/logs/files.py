"""The log directory's files: types, reading entries, statistics, rotation, removal of old ones."""

import json
import logging
import logging.handlers
import os
import re
import shutil
import stat
import time
from collections import Counter
from datetime import datetime

from image2model.clock import iso
from image2model.errors import ApiError
from image2model.files.tree import MB
from image2model.logs import setup as log_setup

logger = logging.getLogger(__name__)

LOG_FILE_NAME = re.compile(r"^(?P<type>[a-z_]+)\.log(?:\.(?P<number>[1-9][0-9]*))?$")
EXPORTS_DIR = "exports"
MAX_LISTED = 200


def resolve_type(value, field="log_type", default=None):
    """Return the log type a name or alias stands for (the default when absent), else raise 400."""
    if value is None or value == "":
        return default
    name = log_setup.ALIASES.get(value, value)
    if name not in log_setup.LOG_TYPES:
        raise ApiError(
            "VALIDATION_ERROR",
            f"Unknown log type {value!r}",
            {field: value, "allowed": [*log_setup.LOG_TYPES, *log_setup.ALIASES]},
        )
    return name


def types():
    """Return the log types, their descriptions and the accepted old names."""
    return {
        "types": list(log_setup.LOG_TYPES),
        "descriptions": dict(log_setup.DESCRIPTIONS),
        "aliases": dict(log_setup.ALIASES),
    }


def log_files(directory):
    """Return `(name, log type or None, backup number or None, stat)` of each regular file."""
    log_setup.flush()  # what was logged so far counts: its sizes, times and entries
    found = []
    for path, info in _regular_files(directory):
        name = os.path.basename(path)
        match = LOG_FILE_NAME.match(name)
        log_type = match["type"] if match and match["type"] in log_setup.LOG_TYPES else None
        number = int(match["number"]) if log_type and match["number"] else None
        found.append((name, log_type, number, info))
    return sorted(found, key=lambda item: item[0])


def files_of_type(directory, log_type):
    """Return `(path, stat)` of a type's files, oldest first: highest backup number, live last."""
    own = [item for item in log_files(directory) if item[1] == log_type]
    own.sort(key=lambda item: -(item[2] or 0))
    return [(os.path.join(directory, name), info) for name, _type, _number, info in own]


def entry_time(entry):
    """Return an entry's timestamp as epoch seconds, or None if it has none readable."""
    value = entry.get("timestamp") if isinstance(entry, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class EntryReader:
    """Reads JSON-lines log files, counting the lines it could not parse."""

    def __init__(self):
        self.unparsed = 0

    def entries(self, files, since=None, until=None):
        """Yield `(epoch, entry)` of the files' entries in `[since, until)`."""
        # Open every file first: a rotation while we read renames files by number, and a name
        # opened later could then be another file's (one read twice, one missed).
        handles = []
        for path, info in files:
            if since is not None and info.st_mtime < since:
                continue  # last written before the window: nothing in it is recent enough
            try:
                handles.append(open(path, encoding="utf-8", errors="replace"))  # noqa: SIM115
            except FileNotFoundError:
                continue  # rotated away meanwhile
        try:
            for handle in handles:
                yield from self._read(handle, since, until)
        finally:
            for handle in handles:
                handle.close()

    def _read(self, handle, since, until):
        """Yield `(epoch, entry)` of one open file's entries in the window."""
        for line in handle:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            epoch = entry_time(entry)
            if epoch is None:
                self.unparsed += 1
                continue
            if (since is None or epoch >= since) and (until is None or epoch < until):
                yield epoch, entry


def statistics(directory):
    """Return counts, sizes and ages of the log files and the space around them."""
    files = log_files(directory)
    sizes = [info.st_size for *_rest, info in files]
    times = [info.st_mtime for *_rest, info in files]
    usage = shutil.disk_usage(directory)
    export_bytes = sum(
        info.st_size for *_rest, info in _regular_files(os.path.join(directory, EXPORTS_DIR))
    )
    return {
        "total_files": len(files),
        "total_size_mb": round(sum(sizes) / MB, 3),
        "total_size_bytes": sum(sizes),
        "oldest_file": iso(min(times)) if times else None,
        "newest_file": iso(max(times)) if times else None,
        "by_type": dict(Counter(log_type or "other" for _name, log_type, *_rest in files)),
        "log_directory": directory,
        "disk_usage": {
            "used_mb": round((sum(sizes) + export_bytes) / MB, 3),
            "available_mb": round(usage.free / MB, 3),
        },
        "exports_size_mb": round(export_bytes / MB, 3),
        "files": [
            {
                "name": name,
                "type": log_type,
                "size_mb": round(info.st_size / MB, 3),
                "modified": iso(info.st_mtime),
            }
            for name, log_type, _number, info in files[:MAX_LISTED]
        ],
    }


def _regular_files(directory):
    """Return `(path, stat)` of the regular files directly in a directory."""
    found = []
    try:
        with os.scandir(directory) as scan:
            for entry in scan:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found.append((entry.path, info))
    except FileNotFoundError:
        pass
    return found


def _shift(path, backup_count):
    """Rotate a live file no handler of this process writes (renames only, nothing opened)."""
    handler = logging.handlers.RotatingFileHandler(path, backupCount=backup_count, delay=True)
    try:
        handler.doRollover()
    finally:
        handler.close()


def rotate(app):
    """Rotate every live log that has content, through its handler so no record is torn."""
    directory = log_setup.log_directory(app)
    log_setup.flush()  # records logged before the rotation belong in the rotated files
    active = log_setup.active(directory)
    rotated, skipped, errors = [], [], []
    for log_type in log_setup.LOG_TYPES:
        name = f"{log_type}.log"
        path = os.path.join(directory, name)
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            size = 0
        if size == 0:
            skipped.append(name)
            continue
        try:
            if active is not None:
                active.roll_over(log_type)
            else:
                _shift(path, int(app.config["LOG_BACKUP_COUNT"]))
        except OSError as error:
            logger.warning("Cannot rotate %s: %s", name, error)
            errors.append({"file": name, "error": error.strerror or type(error).__name__})
            continue
        rotated.append(name)
    skipped += [name for name, _type, number, _info in log_files(directory) if number]
    return {"rotated_files": rotated, "skipped_files": skipped, "errors": errors}


def cleanup(app, older_than_days):
    """Remove rotated log files and exports last written more than `older_than_days` ago."""
    directory = log_setup.log_directory(app)
    cutoff = time.time() - older_than_days * 86400
    candidates = [
        (os.path.join(directory, name), info)
        for name, _type, number, info in log_files(directory)
        if number  # a live log is never removed: its handler writes to it
    ]
    candidates += _regular_files(os.path.join(directory, EXPORTS_DIR))
    removed, removed_bytes, errors = [], 0, []
    for path, info in candidates:
        if info.st_mtime >= cutoff:
            continue
        relative = os.path.relpath(path, directory)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            errors.append({"file": relative, "error": error.strerror or type(error).__name__})
            continue
        removed.append(relative)
        removed_bytes += info.st_size
    if removed:
        logger.info("Removed %d old log files (%d bytes)", len(removed), removed_bytes)
    return {
        "status": "success" if not errors else "partial",
        "removed_files": len(removed),
        "total_size_removed_mb": round(removed_bytes / MB, 3),
        "older_than_days": older_than_days,
        "files": removed[:MAX_LISTED],
        "errors": errors,
    }
