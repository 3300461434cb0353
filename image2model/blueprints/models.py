"""Model generation endpoints: the generator list, new jobs from uploaded files, job status."""

from flask import Blueprint, current_app, jsonify, request

from image2model import generators, params
from image2model.errors import ApiError
from image2model.files import downloads, uploads
from image2model.models3d import conversions, convert
from image2model.pipeline import lifecycle
from image2model.store import db, jobs
from image2model.web.auth import current_principal, require_key

bp = Blueprint("models", __name__, url_prefix="/api/v1/models")
bp.before_request(require_key)


@bp.get("/available")
def available():
    """List the generators this server offers, with their formats and whether they can run."""
    return jsonify(generators.catalogue(current_app))


@bp.post("/generate")
def generate():
    """Start a new single-file job from an earlier upload."""
    body = params.json_object()
    file_id = body.get("file_id")
    if not isinstance(file_id, str) or not file_id:
        raise ApiError("VALIDATION_ERROR", "file_id is required", {"field": "file_id"})
    generator = generators.chosen(current_app, body.get("model_type"))
    generation_options = generator.parse_options(body)
    job_id, task_id = uploads.generate_from_file(
        current_app, db.get_db(), current_principal(), file_id, generator, generation_options
    )
    lifecycle.get_dispatcher(current_app).wake()
    return {
        "job_id": job_id,
        "task_id": task_id,
        "file_id": file_id,
        "model_type": generator.name,
        "status": "queued",
        "estimated_time": generator.estimated_seconds,
    }, 202


@bp.get("/job/<job_id>")
def job_status(job_id):
    """Report a job's state, progress and, when done, where to download its model."""
    conn = db.get_db()
    job = jobs.find_job(conn, job_id, current_principal())
    if job is None:
        raise ApiError("NOT_FOUND", "No such job", {"job_id": job_id}, status=404)
    generations = jobs.generations_of(conn, job_id)
    figures = jobs.summary(generations)
    done = [g for g in generations if g["state"] == "completed"]
    errors = [
        {"file_id": g["file_id"], "code": g["error_code"], "message": g["error_message"]}
        for g in generations
        if g["state"] == "failed"
    ]
    remaining = (
        0
        if figures["status"] in jobs.TERMINAL
        else round(
            generators.REGISTRY[job["model_type"]].estimated_seconds
            * (1 - figures["progress"] / 100)
        )
    )
    return {
        "job_id": job_id,
        "task_id": job["task_id"],
        "model_type": job["model_type"],
        "status": figures["status"],
        "progress": figures["progress"],
        "total_files": figures["total_files"],
        "completed_files": figures["completed_files"],
        "failed_files": figures["failed_files"],
        "model_url": jobs.download_url(job_id, done[0]["result_file"]) if done else None,
        "model_urls": [jobs.download_url(job_id, g["result_file"]) for g in done],
        "errors": errors,
        "estimated_time_remaining": remaining,
    }


@bp.get("/download/<job_id>", merge_slashes=False)
def download_model(job_id):
    """Download a job's model as OBJ (zipped with its texture), PLY, STL or GLB."""
    params.known_query(("format", "units", "file_id", "file"))
    fmt = params.choice(request.args.get("format"), "format", tuple(convert.FORMATS), "obj")
    units = params.choice(request.args.get("units"), "units", convert.UNITS, "mm")
    stored = conversions.model_download(
        current_app,
        db.get_db(),
        job_id,
        current_principal(),
        fmt,
        units,
        request.args.get("file_id") or None,
        request.args.get("file") or None,
    )
    return downloads.send(stored)
