"""Model generation endpoints."""

from flask import Blueprint, current_app, jsonify

from image2model import generators
from image2model.auth import require_key

bp = Blueprint("models", __name__, url_prefix="/api/v1/models")
bp.before_request(require_key)


@bp.get("/available")
def available():
    """List the generators this server offers, with their formats and whether they can run."""
    return jsonify(generators.catalogue(current_app))
