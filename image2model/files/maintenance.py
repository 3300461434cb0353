"""Retention of uploads and results: cleanup of finished jobs, deleting one job, system health."""

import json
import logging
import os
import shutil
import threading
import time

from image2model import clock
from image2model.errors import ApiError
from image2model.files import storage, tree
from image2model.files.tree import MB, Tally, child, entries, newest_mtime
from image2model.store import db, jobs

logger = logging.getLogger(__name__)

GB = 1024**3
MAX_REPORTED = 1000
STATUS_FILE = "cleanup_status.json"

# A job expires once it was created and all its generations finished before the cutoff.
EXPIRED_JOBS = (
    "SELECT j.job_id FROM jobs j WHERE j.deleted_at IS NULL AND j.created_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.job_id = j.job_id"
    " AND (g.state NOT IN (?, ?, ?) OR COALESCE(g.finished_at, g.updated_at) >= ?))"
    " ORDER BY j.created_at"
)


def live_files(conn, leaving=()):
    """Return the ids of files referenced by a job that is not deleted and not in `leaving`."""
    rows = conn.execute(
        "SELECT g.file_id, g.job_id FROM generations g JOIN jobs j ON j.job_id = g.job_id"
        " WHERE j.deleted_at IS NULL"
    )
    return {row["file_id"] for row in rows if row["job_id"] not in leaving}


def _doomed_results(app, conn, cutoff, expired):
    """Return result folders of expired or deleted jobs, and old ones of unknown jobs."""
    doomed = []
    for entry in entries(storage.data_dir(app, "results")):
        row = conn.execute("SELECT deleted_at FROM jobs WHERE job_id = ?", (entry.name,)).fetchone()
        if row is None:
            gone = newest_mtime(entry.path) < cutoff  # no job's (yet): only once it is old
        else:
            gone = row["deleted_at"] is not None or entry.name in expired
        if gone:
            doomed.append(entry.path)
    return doomed


def _doomed_uploads(app, conn, cutoff, kept_files):
    """Return upload files no kept job uses, old unknown ones, whole batch folders if all go."""
    doomed = []
    for entry in entries(storage.data_dir(app, "uploads")):
        if not entry.is_dir(follow_symlinks=False):
            if newest_mtime(entry.path) < cutoff:
                doomed.append(entry.path)
            continue
        file_ids = {
            os.path.basename(row["stored_path"]): row["file_id"]
            for row in conn.execute(
                "SELECT file_id, stored_path FROM files WHERE batch_id = ?", (entry.name,)
            )
        }

        def goes(item, file_ids=file_ids):
            """Tell whether one entry of a batch folder goes."""
            if item.name in file_ids:
                return file_ids[item.name] not in kept_files
            # A file without a row may be an upload being written now: only once it is old.
            return newest_mtime(item.path) < cutoff

        children = entries(entry.path)
        going = [item.path for item in children if goes(item)]
        if len(going) == len(children) and (children or newest_mtime(entry.path) < cutoff):
            doomed.append(entry.path)
        else:
            doomed.extend(going)
    return doomed


def _lock(app):
    """Return the lock that lets one cleanup or deletion run at a time in this app."""
    return app.extensions.setdefault("image2model.cleanup_lock", threading.Lock())


# Jobs are marked deleted before their files go, so their endpoints answer 404 even if removing a
# file then fails; the next run retries, as results of deleted jobs are always swept.
def _mark_deleted(conn, job_ids, now):
    """Record jobs as deleted, so every job endpoint answers 404 for them."""
    with db.transaction(conn):
        for job_id in job_ids:
            conn.execute(
                "UPDATE jobs SET deleted_at = ? WHERE job_id = ? AND deleted_at IS NULL",
                (now, job_id),
            )


def cleanup(app, conn, hours, dry_run=False, trigger="manual"):
    """Remove uploads and results of jobs finished more than `hours` ago; a dry run only counts."""
    with _lock(app):
        started = time.time()
        cutoff = started - float(hours) * 3600
        expired = [row[0] for row in conn.execute(EXPIRED_JOBS, (cutoff, *jobs.TERMINAL, cutoff))]
        if not dry_run:
            _mark_deleted(conn, expired, started)
        doomed = _doomed_results(app, conn, cutoff, set(expired))
        doomed += _doomed_uploads(app, conn, cutoff, live_files(conn, set(expired)))
        tally = Tally(app.instance_path)
        for path in doomed:
            if dry_run:
                tally.count(path)
            else:
                tally.remove(path)
        report = {
            "freed_space_mb": round(tally.bytes / MB, 3),
            "freed_bytes": tally.bytes,
            "files_removed": tally.files,
            "directories_removed": tally.directories,
            "jobs_removed": len(expired),
            "errors": tally.errors,
            "cleanup_hours": hours,
            "dry_run": dry_run,
            "jobs": expired[:MAX_REPORTED],
            "paths": tally.paths[:MAX_REPORTED],
            "truncated": max(len(expired), len(tally.paths)) > MAX_REPORTED,
            "timestamp": clock.iso(started),
        }
    if not dry_run:
        record_run(app, report, trigger, started)
        logger.info(
            "Cleanup (%s, %s h) removed %d jobs, %d files, %d directories, %d bytes, %d errors",
            trigger,
            hours,
            len(expired),
            tally.files,
            tally.directories,
            tally.bytes,
            len(tally.errors),
        )
    return report


def delete_job(app, conn, job_id):
    """Remove one finished job's files and record it deleted; 404 if unknown, 409 in flight."""
    with _lock(app):
        with db.transaction(conn):
            job = conn.execute(
                "SELECT job_id FROM jobs WHERE job_id = ? AND deleted_at IS NULL", (job_id,)
            ).fetchone()
            if job is None:
                raise ApiError("NOT_FOUND", "No such job", {"job_id": job_id[:255]}, 404)
            generations = conn.execute(
                "SELECT state, claimed_by, lease_until FROM generations WHERE job_id = ?",
                (job_id,),
            ).fetchall()
            states = [row["state"] for row in generations]
            # A step that is still running (a live claim) counts as in flight, even after a timeout.
            running = any(r["claimed_by"] and r["lease_until"] > time.time() for r in generations)
            if running or any(state not in jobs.TERMINAL for state in states):
                raise ApiError(
                    "CONFLICT",
                    "The job is still in flight: wait until it has finished, then delete it",
                    {"job_id": job_id, "status": jobs.job_state(states)},
                    409,
                )
            conn.execute("UPDATE jobs SET deleted_at = ? WHERE job_id = ?", (time.time(), job_id))
            files = conn.execute(
                "SELECT DISTINCT f.file_id, f.batch_id, f.stored_path FROM generations g"
                " JOIN files f ON f.file_id = g.file_id WHERE g.job_id = ?",
                (job_id,),
            ).fetchall()
            kept = live_files(conn)
        tally = Tally(app.instance_path)
        tally.remove(child(storage.data_dir(app, "results"), job_id))
        uploads_dir = storage.data_dir(app, "uploads")
        for file_row in files:
            if file_row["file_id"] in kept:
                continue
            batch_dir = child(uploads_dir, file_row["batch_id"])
            tally.remove(child(batch_dir, os.path.basename(file_row["stored_path"])))
            if os.path.isdir(batch_dir) and not os.path.islink(batch_dir):
                if not entries(batch_dir):
                    tally.remove(batch_dir)
    logger.info(
        "Deleted job %s: %d files, %d bytes, %d errors",
        job_id,
        tally.files,
        tally.bytes,
        len(tally.errors),
    )
    return {
        "job_id": job_id,
        "files_removed": tally.files,
        "directories_removed": tally.directories,
        "space_freed_mb": round(tally.bytes / MB, 3),
        "freed_bytes": tally.bytes,
        "status": "success" if not tally.errors else "partial",
        "errors": tally.errors,
    }


def record_run(app, report, trigger, started):
    """Keep the figures of the last cleanup run for system-health."""
    record = {
        "last_run": clock.iso(started),
        "trigger": trigger,
        "cleanup_hours": report["cleanup_hours"],
        "jobs_removed": report["jobs_removed"],
        "files_cleaned": report["files_removed"],
        "directories_removed": report["directories_removed"],
        "space_freed_mb": report["freed_space_mb"],
        "errors": len(report["errors"]),
    }
    path = os.path.join(app.instance_path, STATUS_FILE)
    storage.atomic_write_bytes(path, json.dumps(record).encode())


def last_run(app):
    """Return the figures of the last cleanup run, or None if none ever ran."""
    try:
        with open(os.path.join(app.instance_path, STATUS_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        logger.warning("The cleanup status file is unreadable; reporting no last run")
        return None


def system_health(app):
    """Return `healthy|warning|critical` by disk thresholds, data folder sizes, last cleanup."""
    sizes, worst_percent, least_free = {}, 0.0, None
    for name in storage.DATA_DIRS:
        path = storage.data_dir(app, name)
        sizes[f"{name}_gb"] = round(tree.directory_size(path)[0] / GB, 6)
        usage = shutil.disk_usage(path)
        worst_percent = max(worst_percent, usage.used / usage.total * 100 if usage.total else 0.0)
        least_free = usage.free if least_free is None else min(least_free, usage.free)
    warning = float(app.config["DISK_WARNING_PERCENT"])
    critical = float(app.config["DISK_CRITICAL_PERCENT"])
    min_free_mb = float(app.config["DISK_MIN_FREE_MB"])
    if worst_percent >= critical or least_free / MB < min_free_mb:
        status = "critical"
    else:
        status = "warning" if worst_percent >= warning else "healthy"
    retention = app.extensions.get("image2model.retention")
    return {
        "status": status,
        "timestamp": clock.iso(),
        "disk_usage": {
            **sizes,
            "usage_percent": round(worst_percent, 2),
            "free_gb": round(least_free / GB, 3),
        },
        "thresholds": {
            "warning_percent": warning,
            "critical_percent": critical,
            "min_free_mb": min_free_mb,
        },
        "cleanup_status": last_run(app)
        or {"last_run": None, "files_cleaned": 0, "space_freed_mb": 0.0},
        "retention": {
            "enabled": retention is not None,
            "hours": float(app.config["RETENTION_HOURS"]),
            "interval_seconds": float(app.config["RETENTION_INTERVAL"] or 0),
        },
    }
