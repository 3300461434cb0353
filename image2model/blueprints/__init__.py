"""HTTP endpoints, a blueprint per endpoint group: a view parses, calls the domain, shapes a reply.

May import every package below it (web, ops, pipeline, generators, files, models3d, logs, store);
only the factory imports it.
"""

from image2model.blueprints import (
    admin,
    debug,
    download,
    health,
    logs,
    models,
    page,
    status,
    upload,
)

BLUEPRINTS = (
    health.bp,
    upload.bp,
    models.bp,
    status.bp,
    download.bp,
    debug.bp,
    admin.bp,
    logs.bp,
    page.bp,
)


def register(app):
    """Register every blueprint; health probes are exempt from rate limits."""
    from image2model.web import limits

    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    limits.exempt_blueprint(app, health.bp)
