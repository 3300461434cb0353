"""Admin endpoints (admin API key only)."""

from flask import Blueprint, current_app

from image2model import health, storage
from image2model.auth import require_admin

bp = Blueprint("admin", __name__, url_prefix="/api/v1/admin")
bp.before_request(require_admin)


@bp.get("/disk-usage")
def disk_usage():
    """Report the file system and directory sizes of uploads and results."""
    return {
        "upload_dir": storage.disk_usage(current_app, "uploads"),
        "output_dir": storage.disk_usage(current_app, "results"),
        "timestamp": health.timestamp(),
    }
