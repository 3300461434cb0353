"""The SQLite store: WAL, busy timeout, migrations, transactions, per-thread connections."""

import threading

import pytest

from image2model import db


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


def test_request_connection_is_reused_and_closed(app):
    with app.app_context():
        first = db.get_db()
        assert db.get_db() is first
    with app.app_context():
        assert db.get_db() is not first


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
