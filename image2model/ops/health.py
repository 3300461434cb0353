"""Health figures and component checks behind the health endpoints; none of them blocks."""

import platform
import shutil
import time

import psutil

from image2model import clock
from image2model.config import VERSION
from image2model.pool import get_pool
from image2model.store import db

SERVICE_NAME = "image2model-backend"


def uptime_seconds(app):
    """Return seconds since the app was created."""
    return round(time.time() - app.extensions["image2model.started_at"], 3)


def system_figures(app):
    """Return CPU, memory and data-folder disk usage without sampling for an interval."""
    # interval=None compares with the previous call, so a request never waits on a sample.
    return {
        "platform": platform.system(),
        "cpu_usage_percent": psutil.cpu_percent(interval=None),
        "memory_usage_percent": psutil.virtual_memory().percent,
        "disk_usage_percent": psutil.disk_usage(app.instance_path).percent,
    }


def _timed(name, check):
    """Run a check and return its component record with the time it took."""
    started = time.perf_counter()
    try:
        status, details = check()
    except Exception as error:  # a failing dependency is a health fact, not a crash
        status, details = "unhealthy", {"error": type(error).__name__}
    return {
        "name": name,
        "status": status,
        "response_time_ms": round((time.perf_counter() - started) * 1000, 3),
        **details,
    }


def check_database(app):
    """Run a real query on a fresh connection."""

    def check():
        conn = db.connect(db.database_path(app))
        try:
            version = db.schema_version(conn)
            conn.execute("SELECT COUNT(*) FROM api_keys").fetchone()
        finally:
            conn.close()
        return "healthy", {"schema_version": version}

    return _timed("database", check)


def check_worker_pool(app):
    """Report whether the pool accepts work, its threads, its queue and the FAL step limit."""

    def check():
        pool = get_pool(app)
        dispatcher = app.extensions.get("image2model.dispatcher")
        slots = dispatcher.fal_slots if dispatcher is not None else None
        details = {
            "alive": pool.alive,
            "threads": pool.threads,
            "max_threads": pool.size,
            "queue_depth": pool.queue_depth,
            # FAL steps waiting for their next poll, or held back for a slot, are not queued.
            "fal_step_limit": slots.count if slots is not None else None,
            "fal_steps_running": slots.running if slots is not None else None,
            "fal_steps_held": len(dispatcher.held) if dispatcher is not None else 0,
        }
        return ("healthy" if pool.alive else "unhealthy"), details

    return _timed("worker_pool", check)


def check_disk_space(app):
    """Compare the data folder's free space with DISK_MIN_FREE_MB."""

    def check():
        usage = shutil.disk_usage(app.instance_path)
        free_mb = usage.free / (1024 * 1024)
        threshold_mb = float(app.config["DISK_MIN_FREE_MB"])
        status = "healthy" if free_mb >= threshold_mb else "unhealthy"
        return status, {"free_mb": round(free_mb, 1), "threshold_mb": threshold_mb}

    return _timed("disk_space", check)


def check_fal(app):
    """Report whether FAL credentials are configured; never calls the network."""

    def check():
        configured = bool(app.config["FAL_KEY"])
        return ("healthy" if configured else "not_configured"), {"key_configured": configured}

    return _timed("fal", check)


def overall_status(components):
    """Return `healthy`, or `unhealthy` when any component is."""
    if any(component["status"] == "unhealthy" for component in components):
        return "unhealthy"
    return "healthy"


def detailed(app):
    """Return the body of the detailed health report."""
    components = [
        check_database(app),
        check_worker_pool(app),
        check_disk_space(app),
        check_fal(app),
    ]
    return {
        "status": overall_status(components),
        "service": SERVICE_NAME,
        "version": VERSION,
        "timestamp": clock.iso(),
        "system": system_figures(app),
        "components": components,
        "uptime_seconds": uptime_seconds(app),
    }


def readiness(app):
    """Return `(ready, body)`: database, disk and pool healthy and start-up finished."""
    components = [check_database(app), check_disk_space(app), check_worker_pool(app)]
    started = bool(app.extensions.get("image2model.ready"))
    components.append({"name": "startup", "status": "healthy" if started else "unhealthy"})
    ready = overall_status(components) == "healthy"
    body = {
        "status": "ready" if ready else "not_ready",
        "timestamp": clock.iso(),
        "components": components,
    }
    return ready, body


def init_app(app):
    """Prime psutil's CPU counter so the first report measures something real."""
    psutil.cpu_percent(interval=None)
