"""Status endpoints: per-file progress of a job, task status, and the task's event stream."""

from flask import Blueprint, Response, current_app, request

from image2model import clock, params
from image2model.errors import ApiError
from image2model.store import db, jobs
from image2model.web import sse
from image2model.web.auth import current_principal, require_key

bp = Blueprint("status", __name__, url_prefix="/api/v1/status")
bp.before_request(require_key)


def _job_or_404(conn, job_id=None, task_id=None):
    """Return the visible job for a job or task id, else raise 404."""
    if task_id is not None:
        job = jobs.find_job_by_task(conn, task_id, current_principal())
    else:
        job = jobs.find_job(conn, job_id, current_principal())
    if job is None:
        what = {"task_id": task_id} if task_id is not None else {"job_id": job_id}
        raise ApiError("NOT_FOUND", "No such task" if task_id else "No such job", what, status=404)
    return job


@bp.get("/jobs/<job_id>/progress")
def job_progress(job_id):
    """Report a job's overall progress and a per-file map."""
    conn = db.get_db()
    _job_or_404(conn, job_id=job_id)
    snapshot = jobs.job_snapshot(conn, job_id)
    return {
        "job_id": job_id,
        "status": snapshot["status"],
        "overall_progress": snapshot["progress"],
        "total_files": snapshot["total_files"],
        "completed_files": snapshot["completed_files"],
        "failed_files": snapshot["failed_files"],
        "files": snapshot["files"],
    }


@bp.get("/tasks/<task_id>/status")
def task_status(task_id):
    """Report a task's state, with its result when completed and its error when failed."""
    conn = db.get_db()
    job = _job_or_404(conn, task_id=task_id)
    snapshot = jobs.job_snapshot(conn, job["job_id"])
    result = error = None
    if snapshot["status"] in jobs.TERMINAL:
        event_type, payload = jobs.terminal_event(conn, job["job_id"], snapshot)
        if event_type == "completed":
            result = {
                "job_id": job["job_id"],
                "result": payload["result"],
                "model_url": payload["model_url"],
                "files": snapshot["files"],
            }
        else:
            error = payload["error"]
    return {
        "task_id": task_id,
        "job_id": job["job_id"],
        "status": snapshot["status"],
        "progress": snapshot["progress"],
        "result": result,
        "error": error,
        "timestamp": clock.iso(),
    }


@bp.get("/tasks/<task_id>/stream")
def task_stream(task_id):
    """Stream the task's events (SSE), replaying from Last-Event-ID."""
    job = _job_or_404(db.get_db(), task_id=task_id)
    timeout = params.bounded_int(request.args.get("timeout"), "timeout", 1, 86400, default=3600)
    last_id = params.bounded_int(
        request.headers.get("Last-Event-ID") or request.args.get("last_event_id"),
        "Last-Event-ID",
        0,
        2**62,
        default=0,
    )
    if sse.already_ended(db.get_db(), job["job_id"], last_id):
        # 204 tells an EventSource that reconnected after the end to stop reconnecting.
        return "", 204
    release_slot = sse.slots(current_app).acquire(current_principal().owner)
    body = sse.stream(
        current_app._get_current_object(),
        job["job_id"],
        task_id,
        last_id,
        timeout,
        current_app.config["SSE_HEARTBEAT"],
    )
    response = Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    # Called when the server is done with the response, even if the stream never started.
    response.call_on_close(release_slot)
    return response
