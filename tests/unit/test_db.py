"""The SQLite store: WAL, busy timeout, migrations, transactions, per-thread connections (request
threads keep theirs between requests)."""

import threading

import pytest

from image2model import create_app
from image2model.pipeline import lifecycle
from image2model.store import db


def test_connection_settings(app):
    conn = db.connect(db.database_path(app))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == db.BUSY_TIMEOUT_MS
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        conn.close()


def test_schema_is_at_latest_version(app):
    conn = db.connect(db.database_path(app))
    try:
        assert db.schema_version(conn) == len(db.MIGRATIONS)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "api_keys" in tables
    finally:
        conn.close()


def test_migrate_applies_only_newer_versions(tmp_path, monkeypatch):
    conn = db.connect(str(tmp_path / "m.sqlite3"))
    try:
        monkeypatch.setattr(db, "MIGRATIONS", ["CREATE TABLE one (x INTEGER)"])
        assert db.migrate(conn) == 1
        monkeypatch.setattr(
            db, "MIGRATIONS", ["CREATE TABLE one (x INTEGER)", "CREATE TABLE two (y INTEGER)"]
        )
        assert db.migrate(conn) == 2  # the first script is not run again (it would fail)
        assert db.migrate(conn) == 2
    finally:
        conn.close()


def test_failed_migration_rolls_back(tmp_path, monkeypatch):
    conn = db.connect(str(tmp_path / "m.sqlite3"))
    try:
        monkeypatch.setattr(db, "MIGRATIONS", ["CREATE TABLE ok (x INTEGER); CREATE TABLE ok (y)"])
        with pytest.raises(Exception, match="already exists"):
            db.migrate(conn)
        assert db.schema_version(conn) == 0
        assert conn.execute("SELECT name FROM sqlite_master WHERE name='ok'").fetchone() is None
    finally:
        conn.close()


def test_transaction_commits_or_rolls_back(tmp_path):
    conn = db.connect(str(tmp_path / "t.sqlite3"))
    try:
        conn.execute("CREATE TABLE t (x INTEGER)")
        with db.transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(RuntimeError), db.transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("boom")
        assert [row[0] for row in conn.execute("SELECT x FROM t")] == [1]
    finally:
        conn.close()


def test_a_request_thread_keeps_its_connection_between_requests(app):
    with app.app_context():
        first = db.get_db()
        assert db.get_db() is first
    with app.app_context():
        assert db.get_db() is first and not first.closed


def in_a_thread(function):
    """Run `function` on a new thread and return its result."""
    results = []
    thread = threading.Thread(target=lambda: results.append(function()))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    return results[0]


def test_each_thread_has_its_own_request_connection_closed_when_it_ends(app):
    def grab():
        with app.app_context():
            return db.get_db()

    mine, other = grab(), in_a_thread(grab)
    assert other is not mine
    assert other.closed and not mine.closed


def test_another_database_replaces_and_closes_the_threads_connection(app, app_config, tmp_path):
    with app.app_context():
        first = db.get_db()
    second_app = create_app({**app_config, "INSTANCE_PATH": str(tmp_path / "second")})
    try:
        with second_app.app_context():
            second = db.get_db()
            assert second.path == db.database_path(second_app)
        assert first.closed and not second.closed
    finally:
        lifecycle.shutdown(second_app)


def test_a_transaction_left_open_ends_with_the_request(app):
    with app.app_context():
        conn = db.get_db()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO batches (batch_id, owner, created_at) VALUES ('b', 'o', 0)")
    assert not conn.in_transaction
    with app.app_context():
        assert db.get_db().execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0


def test_request_connections_close_at_shutdown(app):
    def grab():
        with app.app_context():
            return db.get_db()

    mine = grab()
    db.close_request_connections(app)
    assert mine.closed
    with app.app_context():
        again = db.get_db()  # the thread opens a new one
    assert again is not mine and not again.closed


def test_a_connection_sees_what_other_connections_committed(app):
    with app.app_context():
        conn = db.get_db()
        assert conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0
    other = db.connect(db.database_path(app))
    try:
        with db.transaction(other):
            other.execute("INSERT INTO batches (batch_id, owner, created_at) VALUES ('b', 'o', 0)")
    finally:
        other.close()
    with app.app_context():
        assert db.get_db().execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 1


def test_thread_connections_are_per_thread(app):
    connections = app.extensions["db.threads"]
    seen = []

    def grab():
        seen.append(connections.get())

    threads = [threading.Thread(target=grab) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len({id(conn) for conn in seen}) == 3
    connections.close_all()
