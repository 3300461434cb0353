"""Creating, starting and stopping the server's background work: the dispatcher and retention."""

import logging

from image2model import generators
from image2model.files import leftovers
from image2model.pipeline.dispatcher import Dispatcher
from image2model.pool import get_pool
from image2model.store import db, events

logger = logging.getLogger(__name__)


def init_app(app):
    """Create the dispatcher with the generators this server has; `start` sets it going."""
    app.extensions["image2model.dispatcher"] = Dispatcher(app, generators.REGISTRY)


def start(app):
    """Start the server's background work: the dispatcher and periodic retention.

    Only the server calls this (gunicorn's worker hook): a CLI command, a shell or a test that
    builds the app must not claim generations it would then leave behind when it exits.
    """
    remove_interrupted_writes(app)
    get_dispatcher(app).start()
    retention = app.extensions.get("image2model.retention")
    if retention is not None:
        retention.start()


def remove_interrupted_writes(app):
    """Remove what killed processes were writing: uploads never recorded, half downloads."""
    try:
        leftovers.remove_interrupted_writes(app, get_dispatcher(app).connections.get())
    except Exception:  # a leftover file is no reason to leave the jobs waiting
        logger.exception("Removing files a stopped process left failed")


def get_dispatcher(app):
    """Return the app's dispatcher."""
    return app.extensions["image2model.dispatcher"]


def begin_shutdown(app):
    """Stop taking work and wake every waiter (event streams end, the dispatcher stops)."""
    get_pool(app).stopping.set()
    events.notifier(app).notify()
    dispatcher = app.extensions.get("image2model.dispatcher")
    if dispatcher is not None:
        dispatcher.wake()


def shutdown(app):
    """Stop dispatching, let running steps finish, and release this process's claims."""
    retention = app.extensions.get("image2model.retention")
    if retention is not None:
        retention.stop()  # no cleanup starts while the pool winds down
    dispatcher = app.extensions.get("image2model.dispatcher")
    get_pool(app).shutdown(wait=True)
    if dispatcher is not None:
        dispatcher.stop()
    db.close_request_connections(app)  # the request threads' connections, kept between requests
