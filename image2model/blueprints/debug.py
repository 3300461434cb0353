"""Debug endpoints (admin API key only)."""

from flask import Blueprint, current_app

from image2model.ops import job_debug
from image2model.store import db
from image2model.web.auth import require_admin

bp = Blueprint("debug", __name__, url_prefix="/api/v1/debug")
bp.before_request(require_admin)


@bp.get("/job/<job_id>", merge_slashes=False)
def job(job_id):
    """Report what the store holds for a job: its rows, states, timings and files."""
    return job_debug.job_report(current_app, db.get_db(), job_id)
