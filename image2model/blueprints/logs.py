"""Log endpoints (admin API key only): statistics, rotation, cleanup, analysis, export, health."""

from flask import Blueprint, current_app, request, send_file

from image2model import params
from image2model.logs import analysis
from image2model.logs import export as log_export
from image2model.logs import files as log_files
from image2model.logs import setup as log_setup
from image2model.web.auth import require_admin

bp = Blueprint("logs", __name__, url_prefix="/api/v1/logs")
bp.before_request(require_admin)


@bp.get("/statistics")
def statistics():
    """Report counts, sizes and ages of the log files."""
    return log_files.statistics(log_setup.log_directory(current_app))


@bp.post("/rotate")
def rotate():
    """Rotate every live log that has content."""
    return log_files.rotate(current_app)


@bp.delete("/cleanup")
def cleanup():
    """Remove rotated logs and exports older than `older_than_days`."""
    days = params.bounded_int(
        request.args.get("older_than_days"), "older_than_days", 1, 365, default=30
    )
    return log_files.cleanup(current_app, days)


@bp.get("/analyze")
def analyze():
    """Report levels, error patterns, request patterns and response times over a window."""
    log_type = log_files.resolve_type(request.args.get("log_type"), default="worker")
    hours_back = params.bounded_int(request.args.get("hours_back"), "hours_back", 1, 168, 24)
    return analysis.analyze(log_setup.log_directory(current_app), log_type, hours_back)


@bp.get("/summary/daily")
def daily_summary():
    """Report one UTC day's numbers (default today)."""
    day = log_export.parse_date(request.args.get("date"), "date", required=False)
    return analysis.daily_summary(log_setup.log_directory(current_app), day)


@bp.get("/types")
def types():
    """List the log types with descriptions and the accepted old names."""
    return log_files.types()


@bp.post("/export")
def export():
    """Start a background export of a date range and log types as json, csv or txt."""
    start = log_export.parse_date(request.args.get("start_date"), "start_date")
    end = log_export.parse_date(request.args.get("end_date"), "end_date")
    log_types = log_export.parse_types(request.args.get("log_types"))
    fmt = params.choice(
        request.args.get("format"), "format", tuple(log_export.FORMATS), default="json"
    )
    # The export runs on a pool thread, outside this request: it needs the app, not the proxy.
    app = current_app._get_current_object()
    return log_export.start_export(app, start, end, log_types, fmt), 202


@bp.get("/export/<export_id>")
def export_status(export_id):
    """Report an export's status."""
    return log_export.export_status(current_app, export_id)


@bp.get("/export/<export_id>/download")
def export_download(export_id):
    """Send a completed export's file."""
    path, mime_type, name = log_export.export_file(current_app, export_id)
    return send_file(path, mimetype=mime_type, as_attachment=True, download_name=name)


@bp.get("/health")
def health():
    """Report whether logging works: writable, disk, rotation, recent errors, last entry."""
    return analysis.health(
        log_setup.log_directory(current_app), float(current_app.config["DISK_MIN_FREE_MB"])
    )
