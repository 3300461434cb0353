"""Admin endpoints (admin API key only): disk usage, cleanup, deleting jobs, listing, health."""

from flask import Blueprint, current_app, request

from image2model import clock, params
from image2model.errors import ApiError
from image2model.files import maintenance, tree
from image2model.store import db
from image2model.web.auth import require_admin

bp = Blueprint("admin", __name__, url_prefix="/api/v1/admin")
bp.before_request(require_admin)

MAX_CLEANUP_HOURS = 24 * 365 * 10
MAX_LIST_LIMIT = 1000


def _job_id(value):
    """Return a job id from a body field, or raise 400."""
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise ApiError(
            "VALIDATION_ERROR",
            "job_id is required: a non-empty string of at most 255 characters",
            {"field": "job_id"},
        )
    return value.strip()


@bp.get("/disk-usage")
def disk_usage():
    """Report the file system and directory sizes of uploads and results."""
    return {
        "upload_dir": tree.disk_usage(current_app, "uploads"),
        "output_dir": tree.disk_usage(current_app, "results"),
        "timestamp": clock.iso(),
    }


@bp.post("/cleanup")
def cleanup():
    """Remove uploads and results of jobs finished more than `hours` ago (or only report them)."""
    body = params.json_object(optional=True)
    hours = params.bounded_int(
        body.get("hours"),
        "hours",
        1,
        MAX_CLEANUP_HOURS,
        default=current_app.config["RETENTION_HOURS"],
    )
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ApiError("VALIDATION_ERROR", "dry_run must be true or false", {"dry_run": dry_run})
    return maintenance.cleanup(current_app, db.get_db(), hours, dry_run=dry_run)


@bp.post("/cleanup-job")
def cleanup_job():
    """Remove one finished job's files and record it deleted (409 while it is in flight)."""
    job_id = _job_id(params.json_object().get("job_id"))
    return maintenance.delete_job(current_app, db.get_db(), job_id)


@bp.delete("/delete-job/<job_id>")
def delete_job(job_id):
    """Delete one finished job: its files, and the job itself for every endpoint."""
    report = maintenance.delete_job(current_app, db.get_db(), job_id)
    report["files_deleted"] = report.pop("files_removed")
    return report


@bp.get("/list-files")
def list_files():
    """List the top entries of uploads or results with sizes, times and file counts."""
    directory = params.choice(request.args.get("directory"), "directory", tree.LISTABLE)
    if directory is None:
        raise ApiError(
            "VALIDATION_ERROR",
            "directory is required: uploads or results",
            {"field": "directory", "allowed": list(tree.LISTABLE)},
        )
    limit = params.bounded_int(request.args.get("limit"), "limit", 1, MAX_LIST_LIMIT, default=100)
    return tree.list_files(current_app, directory, limit)


@bp.get("/system-health")
def system_health():
    """Report healthy, warning or critical from disk thresholds, sizes and the last cleanup."""
    return maintenance.system_health(current_app)
