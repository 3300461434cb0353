"""Upload endpoints: images in, a batch and its job out; file and batch status."""

from flask import Blueprint, current_app, request

from image2model import generators
from image2model.errors import ApiError
from image2model.files import uploads
from image2model.pipeline import lifecycle
from image2model.store import db, jobs
from image2model.web.auth import current_principal, require_key

bp = Blueprint("upload", __name__, url_prefix="/api/v1/upload")
bp.before_request(require_key)


@bp.post("/", strict_slashes=False)
def upload_files():
    """Check every image, store them and start one job over the batch."""
    generator = generators.chosen(current_app, request.form.get("model_type"))
    generation_options = generator.parse_options(request.form)
    # A browser sends an unused file input as a part with an empty name: not a file.
    files = [f for f in request.files.getlist("files") if f.filename]
    facts = uploads.check_all(files, current_app.config)
    sources = dict(zip(uploads.labels(files), (f.stream for f in files), strict=True))
    uploads.check_for_generator(generator, sources, generation_options)
    batch_id, job_id, task_id, file_rows = uploads.store_batch(
        current_app, current_principal(), files, facts, generator.name, generation_options
    )
    lifecycle.get_dispatcher(current_app).wake()
    return {
        "batch_id": batch_id,
        "job_id": job_id,
        "task_id": task_id,
        "model_type": generator.name,
        "uploaded_files": [
            {
                "file_id": row["file_id"],
                "filename": row["filename"],
                "file_size": row["size"],
                "content_type": row["content_type"],
                "status": "uploaded",
            }
            for row in file_rows
        ],
        "face_limit": generation_options.get("face_limit"),
        "total_files": len(file_rows),
        "status": "uploaded",
        "message": "Files uploaded successfully, processing started",
    }, 201


@bp.get("/status/<file_id>")
def file_status(file_id):
    """Report an uploaded file and the state of its latest generation."""
    conn = db.get_db()
    file_row = uploads.find_file(conn, file_id, current_principal())
    if file_row is None:
        raise ApiError("NOT_FOUND", "No such file", {"file_id": file_id}, status=404)
    latest = uploads.latest_generation(conn, file_id)
    return {
        "file_id": file_id,
        "filename": file_row["filename"],
        "batch_id": file_row["batch_id"],
        "status": "uploaded",
        "processing_status": latest["state"] if latest else "pending",
        "progress": round(latest["progress"], 2) if latest else 0,
        "job_id": latest["job_id"] if latest else None,
    }


@bp.get("/batch/<batch_id>/status")
def batch_status(batch_id):
    """Report a batch's state and counts, derived from its generations."""
    found = uploads.batch_files(db.get_db(), batch_id, current_principal())
    if found is None:
        raise ApiError("NOT_FOUND", "No such batch", {"batch_id": batch_id}, status=404)
    _batch, generations = found
    figures = jobs.summary(generations)
    return {
        "batch_id": batch_id,
        **{
            k: figures[k]
            for k in ("status", "total_files", "completed_files", "failed_files", "progress")
        },
    }
