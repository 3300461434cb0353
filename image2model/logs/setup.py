"""Structured logs: JSON lines per log type in `logs/`, rotated by size, secrets redacted,
written on a thread of their own (log_writer); the access record of every request."""

import atexit
import logging
import logging.handlers
import os
import sys
import threading
import time

from flask import current_app, g, request

from image2model.files import storage
from image2model.logs.redaction import (
    JsonLinesFormatter,
    RedactingFilter,
    Redactor,
    configured_secrets,
)
from image2model.logs.writer import (
    FLUSH_TIMEOUT,
    AccessEntry,
    LogFileHandler,
    LogWriter,
    RecordQueue,
)

LOG_TYPES = ("application", "access", "worker", "worker_errors")
ALIASES = {"celery_worker": "worker", "celery_errors": "worker_errors"}
DESCRIPTIONS = {
    "application": "Application logs: requests' errors, maintenance, everything not below",
    "access": "HTTP access log: method, route template, status, duration and key name",
    "worker": "Worker pool and generator events (replaces celery_worker)",
    "worker_errors": "Warnings and errors of the pool and generators (replaces celery_errors)",
}
PACKAGE_LOGGER = "image2model"
ACCESS_LOGGER = "image2model.access"
# Background work logs to worker.log by package: the pipeline, the generators, the pool, and the
# retention thread that deletes old jobs.
WORKER_LOGGERS = (
    "image2model.pipeline",
    "image2model.generators",
    "image2model.pool",
    "image2model.files.retention",
)

access_logger = logging.getLogger(ACCESS_LOGGER)

# Loggers are process-wide, so the process has one set of log files at a time: the newest app's.
_active = {}
_active_lock = threading.Lock()


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (the console of `make run`)."""

    def __init__(self, level):
        logging.Handler.__init__(self, level)

    @property
    def stream(self):
        return sys.stderr


class NameFilter(logging.Filter):
    """Passes records of the named loggers and those below them (with `exclude`: all others)."""

    def __init__(self, names, exclude=False):
        super().__init__()
        self.names = frozenset(names)
        self.prefixes = tuple(name + "." for name in names)
        self.exclude = exclude

    def filter(self, record):
        named = record.name in self.names or record.name.startswith(self.prefixes)
        return named != self.exclude


class LogFiles:
    """The handlers of one log directory, their writer and the records queue on the root."""

    def __init__(self, directory, max_bytes, backup_count, redactor):
        self.directory = directory
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.redactor = redactor
        self.handlers = {}
        self.writer = None
        self._attached = []

    @property
    def attached(self):
        """Whether the handlers are attached to their loggers (not yet closed)."""
        return bool(self._attached)

    def path(self, log_type):
        """Return the live file of a log type."""
        return os.path.join(self.directory, f"{log_type}.log")

    def _handler(self, log_type, names, exclude=False, level=logging.NOTSET):
        """Return a new JSON-lines file handler of a log type, redacting, for the records of the
        loggers `names` (or, with `exclude`, of all others)."""
        handler = LogFileHandler(
            self.path(log_type),
            maxBytes=self.max_bytes,
            backupCount=self.backup_count,
            encoding="utf-8",
        )
        handler.setLevel(level)
        # First: a record the handler does not write is not worth redacting.
        handler.addFilter(NameFilter(names, exclude))
        handler.addFilter(RedactingFilter(self.redactor))
        handler.setFormatter(JsonLinesFormatter(self.redactor))
        self.handlers[log_type] = handler
        return handler

    def _attach(self, handler):
        """Attach a handler to the root logger and remember it for close()."""
        logging.getLogger().addHandler(handler)
        self._attached.append(handler)

    def install(self, threaded):
        """Open the files (access, worker loggers, the rest) and take every record that reaches
        the root; written on a thread of their own if `threaded`."""
        handlers = [
            self._handler("access", [ACCESS_LOGGER]),
            self._handler("worker", WORKER_LOGGERS),
            self._handler("worker_errors", WORKER_LOGGERS, level=logging.WARNING),
            self._handler("application", [ACCESS_LOGGER, *WORKER_LOGGERS], exclude=True),
        ]
        self.writer = LogWriter(handlers, take_entry)
        if threaded:
            self.writer.start()
            atexit.register(self.writer.stop)
        self._attach(RecordQueue(self.writer))
        console = StderrHandler(logging.WARNING)
        console.addFilter(RedactingFilter(self.redactor))
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._attach(console)

    def stop_writer(self):
        """Write what is queued; from now on records are written by the thread that logs them."""
        atexit.unregister(self.writer.stop)
        self.writer.stop()

    def close(self):
        """Detach, write what is queued and close every handler."""
        for handler in self._attached:
            logging.getLogger().removeHandler(handler)
        self._attached.clear()
        self.stop_writer()
        for handler in self.handlers.values():
            handler.close()

    def roll_over(self, log_type):
        """Rotate a live log file now, under its handler's lock so no record is lost or torn."""
        handler = self.handlers[log_type]
        with handler.lock:
            handler.doRollover()


def active(directory):
    """Return the LogFiles writing to `directory` in this process, or None."""
    with _active_lock:
        files = _active.get("files")
    if files is None or files.directory != directory or not files.attached:
        return None
    return files


def log_directory(app):
    """Return the app's log directory."""
    return storage.data_dir(app, "logs")


def install(directory, config):
    """Replace the process's log handlers with ones writing to `directory`; on a thread of their
    own unless LOG_THREAD is false (by default it is when TESTING)."""
    secrets = set(configured_secrets(config))
    threaded = config.get("LOG_THREAD")
    if threaded is None:
        threaded = not config.get("TESTING")
    with _active_lock:
        previous = _active.pop("files", None)
        if previous is not None:
            if previous.directory == directory:
                secrets |= previous.redactor.secrets  # an earlier app on this folder keeps its own
            previous.close()
        files = LogFiles(
            directory,
            int(config["LOG_MAX_BYTES"]),
            int(config["LOG_BACKUP_COUNT"]),
            Redactor(secrets),
        )
        files.install(bool(threaded))
        _active["files"] = files
    return files


def flush(timeout=FLUSH_TIMEOUT):
    """Wait until every record logged so far is in its file; False if it took over `timeout`."""
    with _active_lock:
        files = _active.get("files")
    return files.writer.flush(timeout) if files is not None else True


def redact_server_log(app, logger):
    """Redact the app's secrets from another logger's records (gunicorn's error log)."""
    logger.addFilter(RedactingFilter(Redactor(configured_secrets(app.config))))


def start_timer():
    """Before-request hook: note when the request started."""
    g.log_started = time.perf_counter()


def request_seconds():
    """Return the seconds since the current request started, or None if it was not noted."""
    started = g.get("log_started")
    return time.perf_counter() - started if started is not None else None


def observe_requests(app, observer):
    """Give `observer` the AccessEntry of each of the app's requests, on the log writer thread
    (at once without one)."""
    app.extensions.setdefault("image2model.request_observers", []).append(observer)


ACCESS_MESSAGE = "%s %s %s %sms"


def log_access(response):
    """After-request hook: the request's access record, with its route template and never the
    key itself, and its observers' entry; the writer thread makes and writes them."""
    logged = access_logger.isEnabledFor(logging.INFO)
    observers = tuple(current_app.extensions.get("image2model.request_observers", ()))
    if not logged and not observers:
        return response
    seconds = request_seconds()
    g.pop("log_started", None)  # the entry has it: a teardown after a failure does not count it
    duration_ms = round(seconds * 1000, 3) if seconds is not None else None
    method, rule, status = request.method, request.url_rule, response.status_code
    route = rule.rule if rule is not None else None
    principal = g.get("principal")
    fields = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "key_name": principal.name if principal is not None else None,
        "remote_addr": request.remote_addr,
    }
    thread = threading.current_thread()
    args = (method, route or "(no route)", status, duration_ms)
    entry = AccessEntry(time.time(), thread.ident, thread.name, args, fields, logged, observers)
    files = _active.get("files")
    if files is not None and files.writer.running:
        files.writer.queue.put(entry)
    else:
        take_entry(entry)
    return response


def take_entry(entry):
    """Log an access entry, as a record made on the request's thread at its time, and hand it
    to its observers."""
    for observer in entry.observers:
        try:
            observer(entry)
        except Exception:  # an observer's failure must not cost the record or the writer
            logging.getLogger(__name__).exception("A request observer failed")
    if not entry.logged:
        return
    record = access_logger.makeRecord(
        ACCESS_LOGGER,
        logging.INFO,
        __file__,
        0,
        ACCESS_MESSAGE,
        entry.args,
        None,
        extra={"log_fields": entry.fields},
    )
    record.created, record.msecs = entry.created, (entry.created % 1) * 1000
    record.thread, record.threadName = entry.thread, entry.thread_name
    access_logger.handle(record)


def init_app(app):
    """Open the log files of the app's data folder and log each request to the access log."""
    if int(app.config["LOG_MAX_BYTES"]) < 1024 or int(app.config["LOG_BACKUP_COUNT"]) < 1:
        raise ValueError("LOG_MAX_BYTES must be at least 1024 and LOG_BACKUP_COUNT at least 1")
    logging.getLogger(PACKAGE_LOGGER).setLevel(str(app.config["LOG_LEVEL"]).upper())
    files = install(log_directory(app), app.config)
    app.extensions["image2model.logs"] = files.directory
    app.before_request(start_timer)
    app.after_request(log_access)
