"""The logging set-up: JSON-lines files per type, routing of loggers, the access log, redaction of
secrets, size rotation, and handlers that never stack across apps; written by the log writer
thread, as the server does (each read waits until it caught up)."""

import dataclasses
import gc
import json
import logging
import os
import sys
import threading
import weakref

import pytest
from flask import Blueprint

from image2model import clock, create_app
from image2model.logs import redaction
from image2model.logs import setup as log_setup
from image2model.pipeline import lifecycle
from tests import images
from tests.conftest import ADMIN_KEY, OTHER_KEY, USER_KEY, bearer

FAL_KEY = "fal-key-id-4821:fal-secret-part-9d7c2e11"
STRANGER_TOKEN = "stranger-token-5f0e9a7731c2"
STORED_STYLE_KEY = "i2m_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
SECRETS = [USER_KEY, OTHER_KEY, ADMIN_KEY, FAL_KEY, *FAL_KEY.split(":"), STRANGER_TOKEN]


@pytest.fixture
def app_config(app_config, monkeypatch, request):
    """A FAL key in config, none from the environment, the writer thread on; more settings by
    indirect parametrization."""
    monkeypatch.delenv("FAL_KEY", raising=False)
    return {**app_config, "FAL_KEY": FAL_KEY, "LOG_THREAD": True, **getattr(request, "param", {})}


def log_dir(app):
    """Return the app's log directory."""
    return os.path.join(app.instance_path, "logs")


def read_log(app, name):
    """Return the parsed entries of a log file (every line must be JSON), all written so far."""
    assert log_setup.flush()
    with open(os.path.join(log_dir(app), name), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def messages(app, log_type):
    """Return the messages of a live log."""
    return [entry["message"] for entry in read_log(app, f"{log_type}.log")]


def all_log_text(app):
    """Return the text of every file below the log directory, all written so far."""
    assert log_setup.flush()
    texts = []
    for root, _dirs, names in os.walk(log_dir(app)):
        for name in names:
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as handle:
                texts.append(handle.read())
    return "\n".join(texts)


def test_four_json_lines_files_exist_from_the_start(app):
    assert sorted(os.listdir(log_dir(app))) == [
        "access.log",
        "application.log",
        "worker.log",
        "worker_errors.log",
    ]


@pytest.mark.parametrize(
    ("logger_name", "level", "expected"),
    [
        ("image2model.pipeline.dispatcher", logging.INFO, {"worker"}),
        ("image2model.pipeline.dispatcher", logging.WARNING, {"worker", "worker_errors"}),
        ("image2model.pool", logging.ERROR, {"worker", "worker_errors"}),
        ("image2model.generators.tripo3d", logging.INFO, {"worker"}),
        ("image2model.generators.relief", logging.CRITICAL, {"worker", "worker_errors"}),
        ("image2model.files.maintenance", logging.INFO, {"application"}),
        ("image2model.errors", logging.ERROR, {"application"}),
        ("image2model", logging.WARNING, {"application"}),
        ("image2model.workers_not_really", logging.WARNING, {"application"}),
        ("some.library", logging.WARNING, {"application"}),
        ("image2model.access", logging.INFO, {"access"}),
    ],
)
def test_each_logger_lands_in_its_log_type(app, logger_name, level, expected):
    logging.getLogger(logger_name).log(level, "routing probe %s", logger_name)
    found = {
        log_type
        for log_type in log_setup.LOG_TYPES
        if f"routing probe {logger_name}" in messages(app, log_type)
    }
    assert found == expected


def test_an_entry_is_one_json_object_with_fields_and_traceback(app):
    try:
        raise ValueError("bad value 42")
    except ValueError:
        logging.getLogger("image2model.somewhere").exception("It failed for %s", "job_x")
    (entry,) = read_log(app, "application.log")
    assert entry["level"] == "ERROR" and entry["logger"] == "image2model.somewhere"
    assert entry["message"] == "It failed for job_x"
    assert entry["timestamp"].endswith("Z") and len(entry["timestamp"]) == 24
    assert "ValueError: bad value 42" in entry["exception"]
    assert entry["thread"] == "MainThread"


def test_info_below_the_package_is_not_written_below_the_level(app):
    logging.getLogger("image2model.pipeline.dispatcher").debug("too chatty")
    assert messages(app, "worker") == []


def test_the_access_log_has_route_template_status_duration_and_key_name(app, client):
    body = images.uploaded(client, [("chair.png", images.png())], model_type="relief")
    client.get(f"/api/v1/models/job/{body['job_id']}", headers=bearer(USER_KEY))
    client.get(f"/api/v1/models/job/{body['job_id']}", headers=bearer(OTHER_KEY))
    client.get("/api/v1/models/available")
    client.get("/api/v1/admin/disk-usage", headers=bearer(ADMIN_KEY))
    client.get("/api/v1/no/such/route", headers=bearer(USER_KEY))
    client.get("/api/v1/health/liveness")

    entries = read_log(app, "access.log")

    summary = [(e["method"], e["route"], e["status"], e["key_name"]) for e in entries]
    assert summary == [
        ("POST", "/api/v1/upload/", 201, "env-1"),
        ("GET", "/api/v1/models/job/<job_id>", 200, "env-1"),
        ("GET", "/api/v1/models/job/<job_id>", 404, "env-2"),
        ("GET", "/api/v1/models/available", 401, None),
        ("GET", "/api/v1/admin/disk-usage", 200, "admin"),
        ("GET", None, 404, None),  # no route: the key was never looked at
        ("GET", "/api/v1/health/liveness", 200, None),
    ]
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in entries)
    assert all(e["logger"] == "image2model.access" and e["level"] == "INFO" for e in entries)
    text = all_log_text(app)
    assert body["job_id"] not in text  # the template is logged, not the path
    for key in (USER_KEY, OTHER_KEY, ADMIN_KEY):
        assert key not in text


@pytest.fixture
def app(app):
    """Add routes that log and raise secrets, the way careless code would."""
    leaky = Blueprint("leaky", __name__)

    @leaky.get("/boom")
    def boom():
        from flask import request

        header = request.headers.get("Authorization", "")
        raise RuntimeError(
            f"failed with {header} and FAL {FAL_KEY}, admin={ADMIN_KEY}, user {USER_KEY}"
        )

    @leaky.get("/chatty")
    def chatty():
        from flask import request

        log = logging.getLogger("image2model.chatty")
        log.warning("Calling FAL with Authorization: Key %s", FAL_KEY)
        log.warning("Incoming Authorization: %s", request.headers.get("Authorization"))
        log.info("config %r", {"ADMIN_API_KEY": ADMIN_KEY, "API_KEYS": [USER_KEY, OTHER_KEY]})
        log.info("stored key %s and api_key=%s", STORED_STYLE_KEY, "plain-secret-value")
        logging.getLogger("image2model.pipeline.dispatcher").error(
            "retry with token=%s", STRANGER_TOKEN
        )
        return {"ok": True}

    app.register_blueprint(leaky, url_prefix="/_leaky")
    return app


@pytest.mark.parametrize("key", [USER_KEY, OTHER_KEY, ADMIN_KEY, STRANGER_TOKEN])
def test_secrets_never_reach_any_log_file(app, client, key):
    assert client.get("/_leaky/boom", headers=bearer(key)).status_code == 500
    assert client.get("/_leaky/chatty", headers=bearer(key)).status_code == 200
    client.get("/api/v1/models/available", headers={"Authorization": f"Key {FAL_KEY}"})
    client.get("/api/v1/models/available", headers=bearer(key))

    text = all_log_text(app)

    for secret in [*SECRETS, STORED_STYLE_KEY, "plain-secret-value"]:
        assert secret not in text, secret
    assert "[REDACTED]" in text
    (failure,) = [e for e in read_log(app, "application.log") if "exception" in e]
    assert "RuntimeError: failed with Bearer [REDACTED] and FAL [REDACTED]" in failure["exception"]
    assert "Traceback" in failure["exception"]
    assert "Calling FAL with Authorization: Key [REDACTED]" in messages(app, "application")


def test_a_worker_failure_mentioning_a_secret_is_redacted(app, client):
    def leaking_step(run):
        """Fail with a message that carries the FAL key."""
        raise RuntimeError(f"FAL refused key {FAL_KEY} for {run.row['job_id']}")

    body = images.uploaded(client, [("chair.png", images.png())], model_type="relief")
    dispatcher = lifecycle.get_dispatcher(app)
    leaking = dataclasses.replace(dispatcher.generators["relief"], step=leaking_step)
    dispatcher.generators = {**dispatcher.generators, "relief": leaking}
    dispatcher.run_due()

    for log_type in ("worker", "worker_errors"):
        entries = read_log(app, f"{log_type}.log")
        traced = [e for e in entries if "exception" in e]
        assert traced and "RuntimeError: FAL refused key [REDACTED]" in traced[0]["exception"]
        assert body["job_id"] in traced[0]["exception"]
    assert not any(secret in all_log_text(app) for secret in SECRETS)


def test_console_gets_warnings_redacted(app, capsys):
    logging.getLogger("image2model.pipeline.dispatcher").warning("console probe with %s", FAL_KEY)
    logging.getLogger("image2model.pipeline.dispatcher").info("console quiet")
    err = capsys.readouterr().err
    assert "console probe with [REDACTED]" in err
    assert FAL_KEY not in err and "console quiet" not in err


def test_records_still_propagate_to_the_root_for_caplog(app, caplog):
    with caplog.at_level(logging.INFO):
        logging.getLogger("image2model.pipeline.dispatcher").info("propagated")
    assert "propagated" in caplog.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer [REDACTED]"),
        ("authorization: bearer abc", "authorization: bearer [REDACTED]"),
        ("Authorization: Key abcd1234:efgh5678", "Authorization: Key [REDACTED]"),
        ("a Key name", "a Key name"),
        ("password=hunter2&x=1", "password=[REDACTED]&x=1"),
        ('{"api_key": "s3cr3t"}', '{"api_key": "[REDACTED]"}'),
        ("FAL_KEY=abc:def", "FAL_KEY=[REDACTED]"),
        ("key i2m_0123456789abcdefXYZ_-", "key [REDACTED]"),
        ("configured-secret-1 and configured-secret-12", "[REDACTED] and [REDACTED]"),
        ("a short key abc stays", "a short key abc stays"),
    ],
)
def test_redactor(text, expected):
    redactor = redaction.Redactor(["configured-secret-1", "configured-secret-12", "abc"])
    assert redactor.redact(text) == expected


@pytest.mark.parametrize(
    "app_config", [{"LOG_MAX_BYTES": 2048, "LOG_BACKUP_COUNT": 2}], indirect=True
)
def test_logs_rotate_by_size_and_keep_the_count(app, client):
    for _ in range(60):
        client.get("/api/v1/health/liveness")
    assert log_setup.flush()
    names = sorted(n for n in os.listdir(log_dir(app)) if n.startswith("access.log"))
    assert names == ["access.log", "access.log.1", "access.log.2"]
    for name in names:
        assert os.path.getsize(os.path.join(log_dir(app), name)) <= 2048
        assert all(e["route"] == "/api/v1/health/liveness" for e in read_log(app, name))


@pytest.mark.parametrize(
    "settings", [{"LOG_BACKUP_COUNT": 0}, {"LOG_MAX_BYTES": 10}], ids=["no backups", "tiny"]
)
def test_bad_log_settings_are_refused(app_config, settings):
    with pytest.raises(ValueError, match="LOG_"):
        create_app({**app_config, **settings})


def our_handlers():
    """Return our handlers attached to the root, access and worker loggers."""
    names = [None, log_setup.ACCESS_LOGGER, *log_setup.WORKER_LOGGERS]
    ours = (log_setup.LogFileHandler, log_setup.StderrHandler, log_setup.RecordQueue)
    return [
        (name, handler)
        for name in names
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, ours)
    ]


def test_handlers_never_stack_across_apps(app_config, tmp_path):
    apps = []
    try:
        for number in range(3):
            config = {**app_config, "INSTANCE_PATH": str(tmp_path / f"instance{number}")}
            apps.append(create_app(config))
            # only on the root: the records queue, which routes to the files, and the console
            assert [(name, type(handler)) for name, handler in our_handlers()] == [
                (None, log_setup.RecordQueue),
                (None, log_setup.StderrHandler),
            ]
            writers = [t for t in threading.enumerate() if t.name == "image2model-logs"]
            assert len(writers) == 1
        logging.getLogger("image2model.pipeline.dispatcher").warning("only in the newest")
        for number, application in enumerate(apps):
            found = messages(application, "worker")
            assert found == (["only in the newest"] if number == 2 else [])
    finally:
        for application in apps:
            lifecycle.shutdown(application)


def test_a_second_app_on_the_same_folder_keeps_the_first_apps_secrets(app, app_config):
    second = create_app({**app_config, "API_KEYS": "a-brand-new-key-123", "FAL_KEY": None})
    try:
        logging.getLogger("image2model.x").warning(
            "%s %s %s", USER_KEY, FAL_KEY, "a-brand-new-key-123"
        )
        assert messages(second, "application")[-1] == "[REDACTED] [REDACTED] [REDACTED]"
    finally:
        lifecycle.shutdown(second)


def test_replaced_handlers_are_closed_and_never_reopen(app, app_config, tmp_path):
    file_handlers = list(log_setup.active(log_dir(app)).handlers.values())
    other = create_app({**app_config, "INSTANCE_PATH": str(tmp_path / "other")})
    try:
        assert len(file_handlers) == 4 and all(h.stream is None for h in file_handlers)
        record = logging.LogRecord(
            "image2model.pipeline.dispatcher", logging.ERROR, "", 0, "late", (), None
        )
        file_handlers[0].handle(record)  # a thread that still held the old handler
        assert file_handlers[0].stream is None
    finally:
        lifecycle.shutdown(other)


def test_a_worker_record_is_formatted_and_redacted_once(app, monkeypatch):
    formatted, redacted = [], []
    format_line, redact = log_setup.JsonLinesFormatter.format, redaction.Redactor.redact

    def counted_format(formatter, record):
        formatted.append(record)
        return format_line(formatter, record)

    def counted_redact(redactor, text):
        redacted.append(text)
        return redact(redactor, text)

    monkeypatch.setattr(log_setup.JsonLinesFormatter, "format", counted_format)
    monkeypatch.setattr(redaction.Redactor, "redact", counted_redact)
    logging.getLogger("image2model.pipeline.runs").info(
        "Generation 1 of job_x: queued -> submitted"
    )
    assert log_setup.flush()
    # Once to measure it for rotation and write it; the application log passes it unredacted.
    assert len(formatted) == 1
    assert len(redacted) == 2  # the message, then the JSON line
    assert "queued -> submitted" in read_log(app, "worker.log")[-1]["message"]


def test_a_written_record_is_not_kept_alive_by_its_handler(tmp_path):
    handler = log_setup.LogFileHandler(str(tmp_path / "worker.log"), maxBytes=4096, backupCount=1)
    handler.setFormatter(log_setup.JsonLinesFormatter(redaction.Redactor([])))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("image2model.pipeline.runs").makeRecord(
            "image2model.pipeline.runs", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    handler.handle(record)
    handler.close()
    written = weakref.ref(record)
    del record
    gc.collect()
    assert written() is None  # nor its traceback's frames
    assert json.loads((tmp_path / "worker.log").read_text())["message"] == "failed"


@pytest.mark.parametrize(
    "created",
    [
        1710498600.0,
        1710498600.0004999,
        1710498600.0005,
        1710498600.9994999,
        1710498600.9995,
        1710498600.9999994,
        1710498600.9999995,
        1710498600.9999996,
        1710498601.123456,
    ],
)
def test_the_formatter_writes_the_clocks_timestamps(created):
    formatter = log_setup.JsonLinesFormatter(redaction.Redactor([]))
    formatter.timestamp(created - 1)  # a second made before: this one is made anew
    assert formatter.timestamp(created) == clock.iso(created, "milliseconds")
    assert formatter.timestamp(created) == clock.iso(created, "milliseconds")  # as kept
