"""Prometheus metrics: per-route request metrics and process figures, on the app's own registry."""

from flask import got_request_exception, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_flask_exporter import PrometheusMetrics

from image2model.config import VERSION
from image2model.logs import setup as log_setup

PREFIX = "image2model"


class RequestMetrics:
    """Each request's duration by method, route template and status, and the requests and those
    that raised by method and status: prometheus-flask-exporter's default metrics, with their
    names and labels, observed off the request thread from the access log's entries. The
    labelled series of each (method, route, status) are looked up once and kept."""

    def __init__(self, registry):
        self.duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Flask HTTP request duration in seconds",
            ("method", "url_rule", "status"),
            registry=registry,
        )
        self.total = Counter(
            f"{PREFIX}_http_request_total",
            "Total number of HTTP requests",
            ("method", "status"),
            registry=registry,
        )
        self.exceptions = Counter(
            f"{PREFIX}_http_request_exceptions_total",
            "Total number of HTTP requests which resulted in an exception",
            ("method", "status"),
            registry=registry,
        )
        self._series = {}

    def series(self, method, rule, status):
        """Return the duration and count series of a method, route template and status."""
        key = (method, rule, status)
        found = self._series.get(key)
        if found is None:
            found = (self.duration.labels(*key), self.total.labels(method, status))
            self._series[key] = found
        return found

    def observe(self, entry):
        """Count a request and observe its duration, from its access entry."""
        fields = entry.fields
        duration, total = self.series(fields["method"], str(fields["route"]), fields["status"])
        if fields["duration_ms"] is not None:
            duration.observe(max(fields["duration_ms"] / 1000, 0))
        total.inc()

    def count_exception(self, _app, exception, **_extra):
        """Count a request that raised past every error handler, as a 500 (its after-request
        hooks, and so its access entry, never came)."""
        self.exceptions.labels(request.method, 500).inc()
        seconds = log_setup.request_seconds()
        if seconds is not None:
            self.duration.labels(request.method, str(request.url_rule), 500).observe(seconds)


def init_app(app):
    """Track every request labelled by its route template, on a registry owned by this app."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    metrics = PrometheusMetrics(app, path=None, export_defaults=False, registry=registry)
    metrics.info(
        f"{PREFIX}_exporter_info",
        "Information about the Prometheus Flask exporter",
        version=metrics.version,
    )
    metrics.info(f"{PREFIX}_app_info", "Application information", version=VERSION)
    requests = RequestMetrics(registry)
    log_setup.observe_requests(app, requests.observe)
    # A signal, sent only then, rather than a teardown hook every request would call.
    got_request_exception.connect(requests.count_exception, app, weak=False)
    app.extensions["image2model.metrics"] = metrics


def exposition(app):
    """Return `(body, content type)` of the metrics in Prometheus text format, every request so
    far counted."""
    log_setup.flush()
    registry = app.extensions["image2model.metrics"].registry
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
