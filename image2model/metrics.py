"""Prometheus metrics: per-route request metrics and process figures, on the app's own registry."""

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_flask_exporter import PrometheusMetrics

from image2model.config import VERSION


def init_app(app):
    """Track every request labelled by its route template, on a registry owned by this app."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    metrics = PrometheusMetrics(
        app, path=None, group_by="url_rule", registry=registry, defaults_prefix="image2model"
    )
    metrics.info("image2model_app_info", "Application information", version=VERSION)
    app.extensions["image2model.metrics"] = metrics


def exposition(app):
    """Return `(body, content type)` of the metrics in Prometheus text format."""
    registry = app.extensions["image2model.metrics"].registry
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
