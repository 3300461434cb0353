"""Periodic retention: a daemon thread running the same cleanup as the admin endpoint."""

import logging
import threading

from image2model.files.maintenance import cleanup
from image2model.store import db

logger = logging.getLogger(__name__)


class Retention:
    """A daemon thread that runs the cleanup every `interval` seconds for `hours`."""

    def __init__(self, app, hours, interval):
        self.app = app
        self.hours = hours
        self.interval = interval
        self.stopping = threading.Event()
        self._thread = None

    def start(self):
        """Start the thread; its first run comes soon after start-up, then every interval."""
        logger.info(
            "Retention: every %s s, jobs finished more than %s h ago", self.interval, self.hours
        )
        self._thread = threading.Thread(target=self.loop, name="image2model-retention", daemon=True)
        self._thread.start()

    def run_once(self):
        """Run one cleanup on a connection of its own; return its report."""
        conn = db.connect(db.database_path(self.app))
        try:
            return cleanup(self.app, conn, self.hours, trigger="retention")
        finally:
            conn.close()

    def loop(self):
        """Clean up until stopped; a failed run is logged and the next one still comes."""
        wait = min(self.interval, 60.0)
        while not self.stopping.wait(wait):
            try:
                self.run_once()
            except Exception:
                logger.exception("Retention cleanup failed")
            wait = self.interval

    def stop(self, timeout=5):
        """Ask the thread to end and wait for it a little."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)


def init_app(app):
    """Set up periodic retention (the server starts it) unless disabled or inline (pool size 0)."""
    hours = float(app.config["RETENTION_HOURS"])
    interval = float(app.config["RETENTION_INTERVAL"] or 0)
    if hours <= 0:
        raise ValueError("RETENTION_HOURS must be positive")
    if interval <= 0 or int(app.config["POOL_SIZE"]) == 0:
        return
    app.extensions["image2model.retention"] = Retention(app, hours, interval)
