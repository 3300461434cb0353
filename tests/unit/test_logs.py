"""Log endpoints against real log files: statistics, rotation, cleanup, analysis of a log the
test wrote, the daily summary, types, export in each format and the logging health."""

import csv
import io
import json
import logging
import os
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from image2model.logs import analysis, export
from image2model.logs import setup as log_setup
from image2model.pipeline import lifecycle
from tests.conftest import ADMIN_KEY, USER_KEY, bearer
from tests.helpers import assert_envelope

DAY = "2024-03-15"
DAY_START = datetime(2024, 3, 15, tzinfo=UTC)


def admin(client, method, path, **kwargs):
    """Send a request with the admin key."""
    return client.open(path, method=method, headers=bearer(ADMIN_KEY), **kwargs)


def log_dir(app):
    """Return the app's log directory."""
    return os.path.join(app.instance_path, "logs")


def stamp(moment):
    """Return a datetime as the logs write it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def entry(moment, level="INFO", message="hello", logger="image2model.test", **fields):
    """Return one log entry as the JSON-lines formatter writes it."""
    return {
        "timestamp": stamp(moment),
        "level": level,
        "logger": logger,
        "message": message,
        "thread": "MainThread",
        **fields,
    }


def access(moment, route, duration_ms, status=200, method="GET"):
    """Return one access entry."""
    return entry(
        moment,
        message=f"{method} {route} {status}",
        logger="image2model.access",
        method=method,
        route=route,
        status=status,
        duration_ms=duration_ms,
        key_name="env-1",
    )


def write_log(app, name, entries, garbage=()):
    """Write a log file of the app's log directory from entries (and unparsable lines)."""
    with open(os.path.join(log_dir(app), name), "w", encoding="utf-8") as handle:
        for item in entries:
            handle.write(json.dumps(item) + "\n")
        for line in garbage:
            handle.write(line + "\n")


def read_log(app, name):
    """Return the parsed entries of a log file."""
    with open(os.path.join(log_dir(app), name), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --- statistics and types -----------------------------------------------------------------------


def test_statistics_count_real_files(app, client):
    client.get("/api/v1/models/available", headers=bearer(USER_KEY))
    write_log(app, "worker.log.1", [entry(datetime.now(UTC))])
    write_log(app, "access.log.2", [])
    with open(os.path.join(log_dir(app), "notes.txt"), "w") as handle:
        handle.write("an operator's note")

    names = sorted(os.listdir(log_dir(app)))
    sizes = sum(os.path.getsize(os.path.join(log_dir(app), name)) for name in names)

    body = admin(client, "GET", "/api/v1/logs/statistics").get_json()

    assert body["total_files"] == len(names) == 7
    assert body["total_size_bytes"] == sizes
    assert body["total_size_mb"] == round(sizes / 1024**2, 3)
    assert body["by_type"] == {
        "access": 2,
        "application": 1,
        "worker": 2,
        "worker_errors": 1,
        "other": 1,
    }
    assert body["log_directory"] == log_dir(app)
    assert body["oldest_file"] <= body["newest_file"]
    assert body["disk_usage"]["available_mb"] > 0
    assert {item["name"] for item in body["files"]} == set(names)


def test_types_have_descriptions_and_the_old_names(client):
    body = admin(client, "GET", "/api/v1/logs/types").get_json()
    assert body["types"] == ["application", "access", "worker", "worker_errors"]
    assert set(body["descriptions"]) == set(body["types"])
    assert all(body["descriptions"].values())
    assert body["aliases"] == {"celery_worker": "worker", "celery_errors": "worker_errors"}


# --- rotate -------------------------------------------------------------------------------------


def test_rotate_really_rotates_every_log_with_content(app, client):
    client.get("/api/v1/models/available", headers=bearer(USER_KEY))
    logging.getLogger("image2model.pipeline.dispatcher").warning("before rotation")
    before = {name: read_log(app, f"{name}.log") for name in ("access", "worker", "worker_errors")}
    assert all(before.values())
    application_had_content = os.path.getsize(os.path.join(log_dir(app), "application.log")) > 0

    body = admin(client, "POST", "/api/v1/logs/rotate").get_json()

    expected = {"access.log", "worker.log", "worker_errors.log"}
    if application_had_content:
        expected.add("application.log")
    assert set(body["rotated_files"]) == expected and body["errors"] == []
    assert set(body["skipped_files"]) == {f"{name}.1" for name in expected} | (
        set() if application_had_content else {"application.log"}
    )
    for name, entries in before.items():
        assert read_log(app, f"{name}.log.1") == entries
    logging.getLogger("image2model.pipeline.dispatcher").warning("after rotation")
    assert [e["message"] for e in read_log(app, "worker.log")] == ["after rotation"]
    # the rotate request itself went to the fresh access log
    assert [e["route"] for e in read_log(app, "access.log")] == ["/api/v1/logs/rotate"]


def test_rotate_shifts_older_backups_and_keeps_the_count(app, client):
    for number in range(1, 6):
        write_log(app, f"worker.log.{number}", [entry(datetime.now(UTC), message=f"b{number}")])
    logging.getLogger("image2model.pool").info("live")

    admin(client, "POST", "/api/v1/logs/rotate")

    names = sorted(n for n in os.listdir(log_dir(app)) if n.startswith("worker.log"))
    assert names == ["worker.log", *[f"worker.log.{n}" for n in range(1, 6)]]  # 5 kept
    assert [e["message"] for e in read_log(app, "worker.log.1")] == ["live"]
    assert [e["message"] for e in read_log(app, "worker.log.2")] == ["b1"]
    assert [e["message"] for e in read_log(app, "worker.log.5")] == ["b4"]


# --- cleanup ------------------------------------------------------------------------------------


def age(path, days):
    """Set a file's modification time `days` into the past."""
    when = time.time() - days * 86400
    os.utime(path, (when, when))


def test_cleanup_removes_only_old_rotated_logs_and_exports(app, client):
    directory = log_dir(app)
    for name in ("worker.log.1", "access.log.3", "application.log.2"):
        write_log(app, name, [entry(datetime.now(UTC))])
    os.makedirs(os.path.join(directory, "exports"), exist_ok=True)
    for name in ("export_old.json", "export_new.csv"):
        with open(os.path.join(directory, "exports", name), "w") as handle:
            handle.write("x" * 100)
    age(os.path.join(directory, "worker.log.1"), 40)
    age(os.path.join(directory, "access.log.3"), 31)
    age(os.path.join(directory, "exports", "export_old.json"), 45)
    age(os.path.join(directory, "application.log"), 400)  # live: never removed
    sizes = sum(
        os.path.getsize(os.path.join(directory, name))
        for name in ("worker.log.1", "access.log.3", "exports/export_old.json")
    )

    body = admin(client, "DELETE", "/api/v1/logs/cleanup?older_than_days=30").get_json()

    assert body["status"] == "success" and body["errors"] == []
    assert body["removed_files"] == 3
    assert sorted(body["files"]) == ["access.log.3", "exports/export_old.json", "worker.log.1"]
    assert body["total_size_removed_mb"] == round(sizes / 1024**2, 3)
    remaining = set(os.listdir(directory))
    assert {"application.log", "application.log.2", "access.log", "worker.log"} <= remaining
    assert "worker.log.1" not in remaining and "access.log.3" not in remaining
    assert os.listdir(os.path.join(directory, "exports")) == ["export_new.csv"]


def test_cleanup_defaults_to_thirty_days(app, client):
    write_log(app, "worker.log.1", [])
    age(os.path.join(log_dir(app), "worker.log.1"), 29)
    body = admin(client, "DELETE", "/api/v1/logs/cleanup").get_json()
    assert body["removed_files"] == 0 and body["older_than_days"] == 30


@pytest.mark.parametrize("days", ["0", "366", "-1", "week", "1.5"])
def test_cleanup_days_are_bounded(client, days):
    response = admin(client, "DELETE", f"/api/v1/logs/cleanup?older_than_days={days}")
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "older_than_days" in detail["details"]


# --- analyze ------------------------------------------------------------------------------------


@pytest.fixture
def written_logs(app):
    """A worker log and an access log written by the test, inside and outside the window."""
    now = datetime.now(UTC)
    recent, old = now - timedelta(hours=2), now - timedelta(hours=30)
    worker = [
        entry(recent, "INFO", "Generation 1 started", "image2model.pipeline.dispatcher"),
        entry(recent, "INFO", "Generation 2 started", "image2model.pipeline.dispatcher"),
        entry(recent, "DEBUG", "Polling job_abc123 again", "image2model.generators.tripo3d"),
        entry(recent, "WARNING", "Generation 7 failed: TIMEOUT", "image2model.pipeline.dispatcher"),
        entry(recent, "ERROR", "Connection timeout after 30 s to 'fal.run'", "image2model.pool"),
        entry(recent, "ERROR", "Connection timeout after 12 s to 'other.host'", "image2model.pool"),
        entry(
            recent,
            "ERROR",
            "Processing failed for job_0a1b2c3d4e",
            "image2model.pipeline.dispatcher",
        ),
        entry(
            recent,
            "CRITICAL",
            "Processing failed for job_ffff0000ff",
            "image2model.pipeline.dispatcher",
        ),
        entry(old, "ERROR", "Old failure outside the window", "image2model.pipeline.dispatcher"),
    ]
    write_log(app, "worker.log.1", worker, garbage=["not json at all", '{"no": "timestamp"}'])
    requests = [
        access(recent, "/api/v1/upload/", 100.0, method="POST"),
        access(recent, "/api/v1/upload/", 300.0, method="POST"),
        access(recent, "/api/v1/models/generate", 2500.0, method="POST"),
        access(old, "/api/v1/upload/", 9999.0, method="POST"),
    ]
    write_log(app, "access.log.1", requests)
    return worker, requests


def access_entries_since(app, hours):
    """Return every access entry of the last `hours`, read by the test from the files."""
    since = time.time() - hours * 3600
    found = []
    for name in os.listdir(log_dir(app)):
        if name.startswith("access.log"):
            for item in read_log(app, name):
                moment = datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00"))
                if moment.timestamp() >= since:
                    found.append(item)
    return found


@pytest.mark.parametrize("log_type", ["worker", "celery_worker"])
def test_analyze_counts_match_the_log_the_test_wrote(app, client, written_logs, log_type):
    client.get("/api/v1/models/available", headers=bearer(USER_KEY))
    expected_access = access_entries_since(app, 24)

    response = admin(client, "GET", f"/api/v1/logs/analyze?log_type={log_type}&hours_back=24")

    body = response.get_json()
    assert body["log_type"] == "worker"
    assert body["lines_analyzed"] == 8 and body["unparsed_lines"] == 2
    assert body["log_levels"] == {"DEBUG": 1, "INFO": 2, "WARNING": 1, "ERROR": 3, "CRITICAL": 1}
    assert body["error_patterns"] == {
        "Connection timeout after <n> s to <str>": 2,
        "Processing failed for job_<id>": 2,
    }
    assert body["request_patterns"]["/api/v1/upload/"] == 2
    assert body["request_patterns"]["/api/v1/models/generate"] == 1
    assert body["request_patterns"]["/api/v1/models/available"] == 1
    durations = [item["duration_ms"] for item in expected_access]
    assert body["performance_metrics"] == {
        "avg_response_time_ms": round(sum(durations) / len(durations), 3),
        "max_response_time_ms": 2500.0,
        "requests": len(durations),
    }
    start = datetime.fromisoformat(body["time_range"]["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(body["time_range"]["end"].replace("Z", "+00:00"))
    assert timedelta(hours=24) - timedelta(seconds=2) <= end - start <= timedelta(hours=24)


def test_analyze_window_follows_hours_back(app, client, written_logs):
    body = admin(client, "GET", "/api/v1/logs/analyze?log_type=worker&hours_back=48").get_json()
    assert body["lines_analyzed"] == 9 and body["log_levels"]["ERROR"] == 4
    assert body["request_patterns"]["/api/v1/upload/"] == 3
    assert body["performance_metrics"]["max_response_time_ms"] == 9999.0


def test_analyze_of_the_access_log_itself(app, client, written_logs):
    for _ in range(3):
        client.get("/api/v1/models/available", headers=bearer(USER_KEY))
    expected = access_entries_since(app, 24)
    body = admin(client, "GET", "/api/v1/logs/analyze?log_type=access&hours_back=24").get_json()
    assert body["lines_analyzed"] == len(expected) == 6
    assert body["log_levels"]["INFO"] == 6
    assert body["request_patterns"]["/api/v1/models/available"] == 3


def test_analyze_defaults_to_the_worker_log_over_a_day(client):
    body = admin(client, "GET", "/api/v1/logs/analyze").get_json()
    assert body["log_type"] == "worker" and body["lines_analyzed"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("log_type=celery", "log_type"),
        ("log_type=../access", "log_type"),
        ("log_type=access.log", "log_type"),
        ("hours_back=0", "hours_back"),
        ("hours_back=169", "hours_back"),
        ("hours_back=day", "hours_back"),
    ],
)
def test_analyze_rejects_bad_input(client, query, field):
    detail = assert_envelope(
        admin(client, "GET", f"/api/v1/logs/analyze?{query}"), 400, "VALIDATION_ERROR"
    )
    assert field in detail["details"]


def test_normalise_groups_messages_by_shape():
    assert analysis.normalise("Job job_1a2b failed after 3 tries") == (
        "Job job_<id> failed after <n> tries"
    )
    assert analysis.normalise("id 3f2a9c1b7d4e5f60 'x'\nsecond line") == "id <hex> <str>"
    assert analysis.normalise("") == "(empty message)"


# --- summary/daily ------------------------------------------------------------------------------


@pytest.fixture
def day_logs(app):
    """Entries on 2024-03-15 and on the days around it, in every log type."""
    inside = DAY_START + timedelta(hours=10)
    before, after = DAY_START - timedelta(seconds=1), DAY_START + timedelta(days=1)
    write_log(
        app,
        "application.log.1",
        [
            entry(before, "ERROR", "Yesterday's error"),
            entry(inside, "INFO", "Started"),
            entry(inside, "ERROR", "Disk full on /data 3"),
            entry(after, "ERROR", "Tomorrow's error"),
        ],
    )
    worker = [
        entry(inside, "WARNING", "Generation 4 failed: TIMEOUT", "image2model.pipeline.dispatcher"),
        entry(inside, "ERROR", "Connection timeout after 30 s", "image2model.pool"),
        entry(inside, "ERROR", "Connection timeout after 31 s", "image2model.pool"),
    ]
    write_log(app, "worker.log.1", worker)
    write_log(app, "worker_errors.log.1", worker)  # the same records: counted once
    write_log(
        app,
        "access.log.1",
        [
            access(inside, "/api/v1/upload/", 50.0, method="POST"),
            access(inside, "/api/v1/upload/", 150.0, method="POST"),
            access(inside, "/api/v1/models/job/<job_id>", 10.0),
            access(after, "/api/v1/upload/", 5.0, method="POST"),
        ],
    )


def test_daily_summary_is_that_dates_numbers(client, day_logs):
    body = admin(client, "GET", f"/api/v1/logs/summary/daily?date={DAY}").get_json()
    assert body["date"] == DAY
    assert body["total_entries"] == 2 + 3 + 3
    assert body["by_type"] == {"application": 2, "access": 3, "worker": 3}
    assert body["error_count"] == 3 and body["warning_count"] == 1
    assert body["top_endpoints"] == [
        {"endpoint": "/api/v1/upload/", "count": 2},
        {"endpoint": "/api/v1/models/job/<job_id>", "count": 1},
    ]
    assert body["error_summary"] == [
        "Connection timeout after <n> s (2)",
        "Disk full on /data <n> (1)",
    ]
    assert body["performance_metrics"]["avg_response_time_ms"] == 70.0


def test_daily_summary_defaults_to_today(client):
    client.get("/api/v1/models/available", headers=bearer(USER_KEY))
    body = admin(client, "GET", "/api/v1/logs/summary/daily").get_json()
    assert body["date"] == datetime.now(UTC).date().isoformat()
    assert body["by_type"]["access"] >= 1
    assert {"endpoint": "/api/v1/models/available", "count": 1} in body["top_endpoints"]


@pytest.mark.parametrize("value", ["2024-13-01", "15-03-2024", "2024-3-5", "today", "2024-02-30"])
def test_daily_summary_rejects_bad_dates(client, value):
    response = admin(client, "GET", f"/api/v1/logs/summary/daily?date={value}")
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert detail["details"]["format"] == "YYYY-MM-DD"


# --- export -------------------------------------------------------------------------------------


def parse_export(fmt, text):
    """Return `(log_type, message)` pairs of an export's content in any format."""
    if fmt == "json":
        document = json.loads(text)
        assert document["entry_count"] == len(document["entries"])
        return [(item["log_type"], item["message"]) for item in document["entries"]]
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return [(row["log_type"], row["message"]) for row in rows]
    pairs = []
    for line in text.splitlines():
        if line.startswith("    "):
            continue  # a traceback line of the entry above
        match = re.match(r"^\S+Z \S+\s+(\S+)\s+\S+: (.*?)(?: \{.*\})?$", line)
        assert match, line
        pairs.append((match[1], match[2]))
    return pairs


EXPECTED_EXPORT = [
    ("application", "Started"),
    ("application", "Disk full on /data 3"),
    ("worker", "Generation 4 failed: TIMEOUT"),
    ("worker", "Connection timeout after 30 s"),
    ("worker", "Connection timeout after 31 s"),
]


@pytest.mark.parametrize("fmt", ["json", "csv", "txt"])
def test_export_downloads_and_parses_in_each_format(app, client, day_logs, fmt):
    url = f"/api/v1/logs/export?start_date={DAY}&end_date={DAY}&log_types=application,celery_worker"
    started = admin(client, "POST", f"{url}&format={fmt}")

    assert started.status_code == 202
    body = started.get_json()
    export_id = body["export_id"]
    assert re.fullmatch(r"export_[0-9a-f]{24}", export_id)
    assert body["download_url"] == f"/api/v1/logs/export/{export_id}/download"
    assert body["status"] in ("started", "running", "completed")
    assert body["estimated_completion"].endswith("Z")
    status = admin(client, "GET", f"/api/v1/logs/export/{export_id}").get_json()
    assert status["status"] == "completed" and status["entries"] == len(EXPECTED_EXPORT)
    assert status["format"] == fmt and status["log_types"] == ["application", "worker"]
    path = os.path.join(log_dir(app), "exports", f"{export_id}.{fmt}")
    assert status["size_bytes"] == os.path.getsize(path)

    with admin(client, "GET", body["download_url"]) as download:
        assert download.status_code == 200
        assert download.mimetype == export.FORMATS[fmt]
        assert f"{export_id}.{fmt}" in download.headers["Content-Disposition"]
        text = download.get_data(as_text=True)

    assert sorted(parse_export(fmt, text)) == sorted(EXPECTED_EXPORT)
    assert [name for name in os.listdir(os.path.dirname(path))] == [f"{export_id}.{fmt}"]


def test_export_of_every_type_keeps_time_order_and_fields(app, client, day_logs):
    body = admin(
        client, "POST", f"/api/v1/logs/export?start_date={DAY}&end_date=2024-03-16"
    ).get_json()
    with admin(client, "GET", body["download_url"]) as download:
        document = json.loads(download.get_data(as_text=True))
    entries = document["entries"]
    assert document["log_types"] == ["application", "access", "worker", "worker_errors"]
    assert len(entries) == 2 + 1 + 4 + 3 + 3  # the 16th's entries too
    assert [e["timestamp"] for e in entries] == sorted(e["timestamp"] for e in entries)
    assert {e["duration_ms"] for e in entries if e["log_type"] == "access"} == {50, 150, 10, 5}


def test_export_status_survives_a_restart_from_the_file(app, client, app_config, day_logs):
    from image2model import create_app

    body = admin(
        client, "POST", f"/api/v1/logs/export?start_date={DAY}&end_date={DAY}&format=csv"
    ).get_json()
    restarted = create_app(app_config)
    try:
        second = restarted.test_client()
        status = admin(second, "GET", f"/api/v1/logs/export/{body['export_id']}").get_json()
        assert status["status"] == "completed" and status["format"] == "csv"
        with admin(second, "GET", body["download_url"]) as download:
            assert download.status_code == 200
    finally:
        lifecycle.shutdown(restarted)


def test_export_not_ready_is_409_and_removed_is_410(app, client, day_logs):
    body = admin(client, "POST", f"/api/v1/logs/export?start_date={DAY}&end_date={DAY}").json
    registry = app.extensions["image2model.log_exports"]
    with registry["lock"]:
        registry["records"][body["export_id"]]["status"] = "running"
    detail = assert_envelope(admin(client, "GET", body["download_url"]), 409, "CONFLICT")
    assert detail["details"]["status"] == "running"
    with registry["lock"]:
        registry["records"][body["export_id"]]["status"] = "completed"
    os.remove(os.path.join(log_dir(app), "exports", f"{body['export_id']}.json"))
    assert_envelope(admin(client, "GET", body["download_url"]), 410, "GONE")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (f"end_date={DAY}", "field"),
        (f"start_date={DAY}", "field"),
        (f"start_date=2024-03-16&end_date={DAY}", "start_date"),
        ("start_date=2023-01-01&end_date=2024-03-15", "start_date"),
        (f"start_date=yesterday&end_date={DAY}", "start_date"),
        (f"start_date={DAY}&end_date={DAY}&format=xml", "format"),
        (f"start_date={DAY}&end_date={DAY}&log_types=nginx", "log_types"),
        (f"start_date={DAY}&end_date={DAY}&log_types=worker,,access", "log_types"),
    ],
)
def test_export_rejects_bad_input(app, client, query, field):
    response = admin(client, "POST", f"/api/v1/logs/export?{query}")
    detail = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert field in detail["details"]
    assert not os.path.exists(os.path.join(log_dir(app), "exports")) or not os.listdir(
        os.path.join(log_dir(app), "exports")
    )


@pytest.mark.parametrize(
    "export_id", ["export_0123456789abcdef01234567", "export_x", "..", "%2e%2e", "application.log"]
)
@pytest.mark.parametrize("suffix", ["", "/download"])
def test_unknown_exports_are_404(client, export_id, suffix):
    response = admin(client, "GET", f"/api/v1/logs/export/{export_id}{suffix}")
    assert_envelope(response, 404, "NOT_FOUND")


# --- health -------------------------------------------------------------------------------------


def test_health_of_a_working_logging_system(app, client):
    client.get("/api/v1/models/available", headers=bearer(USER_KEY))
    for _ in range(2):
        logging.getLogger("image2model.somewhere").error("Something broke")
    logging.getLogger("image2model.pipeline.dispatcher").error("A step broke")
    write_log(
        app, "application.log.1", [entry(datetime.now(UTC) - timedelta(hours=3), "ERROR", "old")]
    )

    last = max(read_log(app, f"{name}.log")[-1]["timestamp"] for name in ("access", "worker"))

    body = admin(client, "GET", "/api/v1/logs/health").get_json()

    assert body["status"] == "healthy"
    assert body["log_directory_writable"] is True and body["disk_space_available"] is True
    assert body["rotation_working"] is True
    assert body["recent_errors"] == 3
    assert body["last_log_entry"] == last[:19] + "Z"
    assert [n for n in os.listdir(log_dir(app)) if n.startswith(".health")] == []


def test_health_sees_a_log_moved_away_and_writing_resumes(app, client):
    client.get("/api/v1/models/available", headers=bearer(USER_KEY))
    os.rename(os.path.join(log_dir(app), "access.log"), os.path.join(log_dir(app), "moved.log"))

    body = admin(client, "GET", "/api/v1/logs/health").get_json()

    assert body["rotation_working"] is False and body["status"] == "warning"
    # the health request itself was logged to a new access.log
    assert [e["route"] for e in read_log(app, "access.log")] == ["/api/v1/logs/health"]
    again = admin(client, "GET", "/api/v1/logs/health").get_json()
    assert again["rotation_working"] is True and again["status"] == "healthy"


@pytest.mark.parametrize("app_config", [{"DISK_MIN_FREE_MB": 10**12}], indirect=True)
def test_health_warns_without_disk_space(client):
    body = admin(client, "GET", "/api/v1/logs/health").get_json()
    assert body["disk_space_available"] is False and body["status"] == "warning"


@pytest.fixture
def app_config(app_config, request):
    """A test may add settings with indirect parametrization."""
    return {**app_config, **getattr(request, "param", {})}


def test_health_without_handlers_reports_rotation_not_working(app, client):
    log_setup.active(log_dir(app)).close()  # as if another app had taken over the process's logging
    try:
        body = admin(client, "GET", "/api/v1/logs/health").get_json()
        assert body["rotation_working"] is False
    finally:
        log_setup.install(log_dir(app), app.config)


def test_a_second_export_while_one_runs_is_429(app, client, day_logs):
    body = admin(client, "POST", f"/api/v1/logs/export?start_date={DAY}&end_date={DAY}").json
    registry = app.extensions["image2model.log_exports"]
    with registry["lock"]:
        registry["records"][body["export_id"]]["status"] = "running"
    second = admin(client, "POST", f"/api/v1/logs/export?start_date={DAY}&end_date={DAY}")
    assert_envelope(second, 429, "RATE_LIMIT_EXCEEDED")
    with registry["lock"]:
        registry["records"][body["export_id"]]["status"] = "completed"
    third = admin(client, "POST", f"/api/v1/logs/export?start_date={DAY}&end_date={DAY}")
    assert third.status_code == 202


def test_a_rotation_during_a_read_loses_no_file(app, tmp_path):
    from image2model.logs.files import EntryReader

    folder = tmp_path / "rot"
    folder.mkdir()
    paths = []
    for number in (2, 1, 0):
        path = folder / (f"access.log.{number}" if number else "access.log")
        lines = [
            json.dumps({"timestamp": f"2024-03-15T10:0{number}:0{i}Z", "n": number})
            for i in range(3)
        ]
        path.write_text("\n".join(lines) + "\n")
        paths.append((str(path), os.stat(path)))
    entries = EntryReader().entries(paths)
    first = next(entries)
    # rotate: every file moves up one number, a fresh live file appears
    os.rename(folder / "access.log.2", folder / "access.log.3")
    os.rename(folder / "access.log.1", folder / "access.log.2")
    os.rename(folder / "access.log", folder / "access.log.1")
    (folder / "access.log").write_text("")
    rest = list(entries)
    assert [e["n"] for _t, e in [first, *rest]] == [2, 2, 2, 1, 1, 1, 0, 0, 0]
