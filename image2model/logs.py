"""Structured logs: JSON lines per log type in `logs/`, rotated by size, secrets redacted."""

import json
import logging
import logging.handlers
import os
import sys
import threading
import time

from flask import g, request

from image2model import clock, storage
from image2model.log_redaction import RedactingFilter, Redactor, configured_secrets

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
WORKER_LOGGERS = (
    "image2model.worker",
    "image2model.runs",
    "image2model.pool",
    "image2model.generators",
    "image2model.retention",
)

access_logger = logging.getLogger(ACCESS_LOGGER)

# Loggers are process-wide, so the process has one set of log files at a time: the newest app's.
_active = {}
_active_lock = threading.Lock()


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, fields, exception."""

    def __init__(self, redactor):
        super().__init__()
        self.redactor = redactor

    def format(self, record):
        entry = {
            "timestamp": clock.iso(record.created, "milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        entry.update(getattr(record, "log_fields", None) or {})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # Redacted again as a whole: fields and reprs may carry a secret too.
        return self.redactor.redact(json.dumps(entry, default=str, ensure_ascii=False))


class LogFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated file that reopens its path if the file was moved away under it."""

    _formatted = (None, "")  # the record being written and its line

    def format(self, record):
        # The rotation check formats a record to measure it, then writing it formats it again
        # (JSON and redaction, most of a record's cost); both run in emit, under the lock.
        last, line = self._formatted
        if last is not record:
            line = super().format(record)
            self._formatted = (record, line)
        return line

    def emit(self, record):
        if self._closed:
            return  # a thread still holding a replaced handler must not reopen the file
        if not self.writes_to_its_path():
            self.stream.close()
            self.stream = None
        try:
            super().emit(record)
        finally:
            self._formatted = (None, "")  # a record's traceback is not kept alive here

    def writes_to_its_path(self):
        """Tell whether the open file (if any) is still the one at the handler's path."""
        stream = self.stream
        if stream is None:
            return True  # opened at the next record
        try:
            on_disk = os.stat(self.baseFilename)
        except FileNotFoundError:
            return False
        current = os.fstat(stream.fileno())
        return (on_disk.st_dev, on_disk.st_ino) == (current.st_dev, current.st_ino)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (the console of `make run`)."""

    def __init__(self, level):
        logging.Handler.__init__(self, level)

    @property
    def stream(self):
        return sys.stderr


class NameFilter(logging.Filter):
    """Passes records whose logger is not one of the excluded names or below them."""

    def __init__(self, excluded):
        super().__init__()
        self.excluded = tuple(excluded)

    def filter(self, record):
        return not any(record.name == n or record.name.startswith(n + ".") for n in self.excluded)


class LogFiles:
    """The handlers of one log directory and the loggers they are attached to."""

    def __init__(self, directory, max_bytes, backup_count, redactor):
        self.directory = directory
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.redactor = redactor
        self.handlers = {}
        self._attached = []

    @property
    def attached(self):
        """Whether the handlers are attached to their loggers (not yet closed)."""
        return bool(self._attached)

    def path(self, log_type):
        """Return the live file of a log type."""
        return os.path.join(self.directory, f"{log_type}.log")

    def _handler(self, log_type, level=logging.NOTSET, excluded=()):
        """Return a new JSON-lines file handler of a log type, redacting, without the records
        of the `excluded` loggers."""
        handler = LogFileHandler(
            self.path(log_type),
            maxBytes=self.max_bytes,
            backupCount=self.backup_count,
            encoding="utf-8",
        )
        handler.setLevel(level)
        if excluded:
            # First: a record the handler does not write is not worth redacting.
            handler.addFilter(NameFilter(excluded))
        handler.addFilter(RedactingFilter(self.redactor))
        handler.setFormatter(JsonLinesFormatter(self.redactor))
        self.handlers[log_type] = handler
        return handler

    def _attach(self, logger_name, handler):
        """Attach a handler to a logger (None: the root) and remember it for close()."""
        logging.getLogger(logger_name).addHandler(handler)
        self._attached.append((logger_name, handler))

    def install(self):
        """Open the files and attach: access, worker loggers, and the root for the rest."""
        self._attach(ACCESS_LOGGER, self._handler("access"))
        worker, worker_errors = self._handler("worker"), self._handler("worker_errors", "WARNING")
        for name in WORKER_LOGGERS:
            self._attach(name, worker)
            self._attach(name, worker_errors)
        application = self._handler("application", excluded=(ACCESS_LOGGER, *WORKER_LOGGERS))
        self._attach(None, application)
        console = StderrHandler(logging.WARNING)
        console.addFilter(RedactingFilter(self.redactor))
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._attach(None, console)

    def close(self):
        """Detach and close every handler."""
        for logger_name, handler in self._attached:
            logging.getLogger(logger_name).removeHandler(handler)
        for _logger_name, handler in self._attached:
            handler.close()
        self._attached.clear()

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
    """Replace the process's log handlers with ones writing to `directory`."""
    secrets = set(configured_secrets(config))
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
        files.install()
        _active["files"] = files
    return files


def redact_server_log(app, logger):
    """Redact the app's secrets from another logger's records (gunicorn's error log)."""
    logger.addFilter(RedactingFilter(Redactor(configured_secrets(app.config))))


def start_timer():
    """Before-request hook: note when the request started."""
    g.log_started = time.perf_counter()


def log_access(response):
    """After-request hook: one access record with the route template, never the key itself."""
    started = g.get("log_started")
    duration_ms = round((time.perf_counter() - started) * 1000, 3) if started else None
    route = request.url_rule.rule if request.url_rule is not None else None
    principal = g.get("principal")
    access_logger.info(
        "%s %s %s %sms",
        request.method,
        route or "(no route)",
        response.status_code,
        duration_ms,
        extra={
            "log_fields": {
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "key_name": principal.name if principal is not None else None,
                "remote_addr": request.remote_addr,
            }
        },
    )
    return response


def init_app(app):
    """Open the log files of the app's data folder and log each request to the access log."""
    if int(app.config["LOG_MAX_BYTES"]) < 1024 or int(app.config["LOG_BACKUP_COUNT"]) < 1:
        raise ValueError("LOG_MAX_BYTES must be at least 1024 and LOG_BACKUP_COUNT at least 1")
    logging.getLogger(PACKAGE_LOGGER).setLevel(str(app.config["LOG_LEVEL"]).upper())
    files = install(log_directory(app), app.config)
    app.extensions["image2model.logs"] = files.directory
    app.before_request(start_timer)
    app.after_request(log_access)
