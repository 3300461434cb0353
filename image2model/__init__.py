"""image2model: a self-hosted service that turns 2D photos into 3D models."""

import os
import time

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from image2model import config as config_module
from image2model.pipeline import lifecycle

__version__ = config_module.VERSION


def create_app(test_config=None):
    """Build the application: config layers, extensions, blueprints, start-up work."""
    instance_path = (test_config or {}).get("INSTANCE_PATH") or os.environ.get(
        "IMAGE2MODEL_INSTANCE_PATH", "instance"
    )
    app = Flask(
        __name__, instance_path=os.path.abspath(instance_path), instance_relative_config=True
    )
    app.config.from_mapping(config_module.DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("IMAGE2MODEL")
    if test_config:
        app.config.from_mapping(test_config)
    config_module.finalize(app.config)
    os.makedirs(app.instance_path, exist_ok=True)
    app.extensions["image2model.started_at"] = time.time()

    from image2model.logs import setup as log_setup

    log_setup.init_app(app)
    # A `//` in a path would otherwise get Werkzeug's HTML redirect instead of the JSON envelope.
    app.url_map.merge_slashes = False

    if app.config["PROXY_HOPS"]:
        hops = int(app.config["PROXY_HOPS"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    from image2model import blueprints, errors, generators, pool
    from image2model.files import retention
    from image2model.ops import health, metrics
    from image2model.store import db, events
    from image2model.web import auth, limits

    errors.init_app(app)
    db.init_app(app)
    auth.init_app(app)
    limits.init_app(app)
    metrics.init_app(app)
    pool.init_app(app)
    health.init_app(app)
    events.init_app(app)
    blueprints.register(app)
    generators.init_app(app)
    lifecycle.init_app(app)
    retention.init_app(app)
    app.extensions["image2model.ready"] = True
    return app
