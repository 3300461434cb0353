"""A job's stored files: listing them, resolving a download safely, and sending it."""

import logging
import os
import stat
from dataclasses import dataclass

from flask import request, send_file
from werkzeug.exceptions import RequestedRangeNotSatisfiable

from image2model.errors import ApiError
from image2model.files import storage
from image2model.store import jobs

logger = logging.getLogger(__name__)

MIME_TYPES = {".glb": "model/gltf-binary", ".webp": "image/webp", ".png": "image/png"}
# Longer than any name we store; also the usual file-system limit of one path component.
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class StoredFile:
    """A file ready to send: its real path, stored name, MIME type and the name it is saved as."""

    path: str
    filename: str
    mime_type: str
    download_name: str


def checked_name(app, name, field="filename"):
    """Refuse a name from a URL that could leave its folder (traversal, NUL, link out): 400."""
    problem = None
    if len(name) > MAX_NAME_LENGTH:
        problem = f"longer than {MAX_NAME_LENGTH} characters"
    else:
        try:
            storage.inside(storage.data_dir(app, "results"), name)
        except storage.UnsafePath:
            problem = "not a plain file name"
    if problem:
        raise ApiError(
            "VALIDATION_ERROR", f"Invalid {field}: {problem}", {field: name[:MAX_NAME_LENGTH]}
        )
    return name


def visible_job(conn, job_id, principal):
    """Return the job the caller may see; unknown, deleted or another key's job: 404."""
    job = jobs.find_job(conn, job_id, principal)
    if job is None:
        raise ApiError("NOT_FOUND", "No such job", {"job_id": job_id[:MAX_NAME_LENGTH]}, 404)
    return job


def not_completed(job_id, generations, generation=None):
    """Return the 409 for a job (or one of its files) that has no model yet."""
    status = generation["state"] if generation else jobs.summary(generations)["status"]
    details = {"job_id": job_id, "status": status}
    if generation is not None:
        details["file_id"] = generation["file_id"]
    message = (
        f"The model is not ready: its status is {status}"
        if status not in jobs.TERMINAL
        else f"There is no model to download: the status is {status}"
    )
    return ApiError("CONFLICT", message, details, 409)


def _original_stem(generation):
    """Return the original image's name without extension, minus characters unfit for a header."""
    stem = os.path.splitext(generation["filename"])[0]
    return "".join(c for c in stem if c.isprintable() and c not in '/\\"').strip()


def download_stem(generation, generations):
    """Return the name downloads are saved under: the original image's, unless two share it."""
    stem = _original_stem(generation)
    same = [g for g in generations if _original_stem(g).lower() == stem.lower()]
    return stem if stem and len(same) == 1 else generation["result_stem"]


def _stored(app, generation, column, generations):
    """Return the StoredFile of a completed generation's column, or None if it is not on disk."""
    filename = generation[column]
    if not filename:
        return None
    try:
        path = storage.inside(storage.job_results_dir(app, generation["job_id"]), filename)
        # realpath has resolved links already; a dangling name or a folder is not a download
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
    except storage.UnsafePath:
        logger.warning("Refusing %s of generation %s: a link out", filename, generation["id"])
        return None
    except FileNotFoundError:
        return None
    extension = os.path.splitext(filename)[1].lower()
    suffix = storage.PREVIEW_SUFFIX if column == "preview_file" else ""
    return StoredFile(
        path=path,
        filename=filename,
        mime_type=MIME_TYPES.get(extension, "application/octet-stream"),
        download_name=download_stem(generation, generations) + suffix + extension,
    )


def stored_files(app, generations):
    """Yield `(generation, model, preview)` StoredFiles of every completed generation."""
    for generation in generations:
        if generation["state"] != "completed":
            continue
        model = _stored(app, generation, "result_file", generations)
        preview = _stored(app, generation, "preview_file", generations)
        if model is None:
            logger.warning("Result of generation %s is missing on disk", generation["id"])
        yield generation, model, preview


def job_listing(app, conn, job_id, principal):
    """Return the `/all` body: every stored file of the job's completed generations."""
    visible_job(conn, job_id, principal)
    generations = jobs.generations_of(conn, job_id)
    if not any(g["state"] == "completed" for g in generations):
        raise not_completed(job_id, generations)
    entries = []
    for _generation, model, preview in stored_files(app, generations):
        preview_url = jobs.download_url(job_id, preview.filename) if preview else None
        for stored, rendered in ((model, preview_url), (preview, None)):
            if stored is not None:
                entries.append(_entry(stored, rendered))
    return {
        "job_id": job_id,
        "files": entries,
        "download_urls": [jobs.download_url(job_id, entry["filename"]) for entry in entries],
        "total_files": len(entries),
    }


def _entry(stored, rendered_image):
    """Return one file of the `/all` listing."""
    details = os.stat(stored.path)
    return {
        "filename": stored.filename,
        "size": details.st_size,
        "mime_type": stored.mime_type,
        "created_time": int(details.st_mtime),
        "rendered_image": rendered_image,
    }


def job_file(app, conn, job_id, filename, principal):
    """Resolve `/download/{job_id}/{filename}` to a StoredFile; 400, 404 or 409 otherwise."""
    visible_job(conn, job_id, principal)
    checked_name(app, filename)
    generations = jobs.generations_of(conn, job_id)
    for _generation, model, preview in stored_files(app, generations):
        for stored in (model, preview):
            if stored is not None and stored.filename == filename:
                return stored
    for generation in generations:
        stem = generation["result_stem"]
        expected = {stem + ".glb", *(storage.preview_name(stem, ext) for ext in MIME_TYPES)}
        if generation["state"] != "completed" and filename in expected:
            raise not_completed(job_id, generations, generation)
    raise ApiError("NOT_FOUND", "No such file", {"job_id": job_id, "filename": filename}, 404)


def direct_file(app, conn, filename, principal):
    """Resolve a bare file name among the caller's jobs (admin: all); several jobs: 409."""
    checked_name(app, filename)
    query = (
        "SELECT DISTINCT g.job_id FROM generations g JOIN jobs j ON j.job_id = g.job_id"
        # `+g.state`: the state index matches nearly every row; the name indexes find them.
        " WHERE j.deleted_at IS NULL AND +g.state = 'completed'"
        " AND (g.result_file = ? OR g.preview_file = ?)"
    )
    arguments = [filename, filename]
    if not principal.is_admin:
        query += " AND j.owner = ?"
        arguments.append(principal.owner)
    job_ids = [row["job_id"] for row in conn.execute(query + " ORDER BY g.job_id", arguments)]
    if len(job_ids) > 1:
        raise ApiError(
            "CONFLICT",
            "Several jobs hold a file of this name: download it by job",
            {"filename": filename, "job_ids": job_ids},
            409,
        )
    if not job_ids:
        raise ApiError("NOT_FOUND", "No such file", {"filename": filename}, 404)
    return job_file(app, conn, job_ids[0], filename, principal)


def send(stored):
    """Stream a stored file as an attachment with ETag, conditional requests and ranges."""
    response = send_file(
        stored.path,
        mimetype=stored.mime_type,
        as_attachment=True,
        download_name=stored.download_name,
        conditional=False,
        etag=True,
    )
    # downloads need a key: shared caches must not keep them
    response.cache_control.private = True
    try:
        return response.make_conditional(
            request.environ, accept_ranges=True, complete_length=response.content_length
        )
    except RequestedRangeNotSatisfiable:
        response.close()  # the open file would otherwise wait for the garbage collector
        raise
