"""Health endpoints for load balancers and operators; no API key needed."""

import time

from flask import Blueprint, current_app, jsonify

from image2model import clock
from image2model.config import VERSION
from image2model.ops import health, metrics

bp = Blueprint("health", __name__, url_prefix="/api/v1/health")

# The current second as `clock.iso()` writes it: probes come many times a second.
_second = (None, "")


def now():
    """Return the current time as `clock.iso()` does (to the second), made once a second."""
    global _second
    second = int(time.time())
    last, text = _second
    if last != second:
        text = clock.iso(second)
        _second = (second, text)
    return text


@bp.get("/", strict_slashes=False)
def basic():
    """Say the service is up."""
    return {
        "status": "healthy",
        "service": health.SERVICE_NAME,
        "version": VERSION,
        "timestamp": now(),
    }


@bp.get("/detailed")
def detailed():
    """Report system figures and each component's state."""
    return health.detailed(current_app)


@bp.get("/metrics")
def prometheus_metrics():
    """Expose metrics in Prometheus text format."""
    body, content_type = metrics.exposition(current_app)
    return body, 200, {"Content-Type": content_type}


@bp.get("/liveness")
def liveness():
    """Say the process answers; checks no dependency."""
    return {"status": "alive", "timestamp": now()}


@bp.get("/readiness")
def readiness():
    """Say whether the service can take work now (503 when not)."""
    ready, body = health.readiness(current_app)
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    return response
