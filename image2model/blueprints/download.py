"""Download endpoints: a job's stored files listed, and one file streamed by job or by name."""

from flask import Blueprint, current_app

from image2model import params
from image2model.files import downloads
from image2model.store import db
from image2model.web.auth import current_principal, require_key

bp = Blueprint("download", __name__, url_prefix="/api/v1/download")
bp.before_request(require_key)


@bp.before_request
def no_query():
    """Refuse query parameters: these downloads take none, and a misspelt one is no choice."""
    params.known_query(())


@bp.get("/<job_id>/all", merge_slashes=False)
def job_files(job_id):
    """List every stored file of a job with its size, type, preview and download URL."""
    return downloads.job_listing(current_app, db.get_db(), job_id, current_principal())


@bp.get("/<job_id>/<filename>", merge_slashes=False)
def job_file(job_id, filename):
    """Stream one stored file of a job."""
    stored = downloads.job_file(current_app, db.get_db(), job_id, filename, current_principal())
    return downloads.send(stored)


@bp.get("/direct/<filename>", merge_slashes=False)
def direct_file(filename):
    """Stream a stored file found by name among the caller's jobs."""
    stored = downloads.direct_file(current_app, db.get_db(), filename, current_principal())
    return downloads.send(stored)
