"""SQLite access: per-request and per-thread connections, transactions, schema migrations."""

import contextlib
import os
import sqlite3
import threading
import weakref

from flask import current_app, g

# Each entry moves the schema one version forward; never edit an entry once released.
MIGRATIONS = [
    """
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        key_prefix TEXT NOT NULL,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    """,
    """
    CREATE TABLE batches (
        batch_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE files (
        file_id TEXT PRIMARY KEY,
        batch_id TEXT NOT NULL REFERENCES batches (batch_id),
        owner TEXT NOT NULL,
        filename TEXT NOT NULL,
        stored_path TEXT NOT NULL,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        task_id TEXT NOT NULL UNIQUE,
        batch_id TEXT REFERENCES batches (batch_id),
        owner TEXT NOT NULL,
        model_type TEXT NOT NULL,
        options TEXT NOT NULL,
        created_at REAL NOT NULL,
        deleted_at REAL
    );
    CREATE TABLE generations (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (job_id),
        file_id TEXT NOT NULL REFERENCES files (file_id),
        result_stem TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        progress REAL NOT NULL DEFAULT 0,
        message TEXT,
        fal_request_id TEXT,
        fal_status_url TEXT,
        fal_response_url TEXT,
        fal_cancel_url TEXT,
        fal_logs_seen INTEGER NOT NULL DEFAULT 0,
        result_file TEXT,
        preview_file TEXT,
        error_code TEXT,
        error_message TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        claimed_by TEXT,
        lease_until REAL,
        next_run_at REAL NOT NULL DEFAULT 0,
        deadline_at REAL NOT NULL,
        created_at REAL NOT NULL,
        submitted_at REAL,
        started_at REAL,
        downloading_at REAL,
        finished_at REAL,
        updated_at REAL NOT NULL,
        UNIQUE (job_id, result_stem)
    );
    CREATE INDEX generations_by_state ON generations (state, next_run_at);
    CREATE INDEX generations_by_job ON generations (job_id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL REFERENCES jobs (job_id),
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX events_by_job ON events (job_id, id);
    CREATE INDEX files_by_batch ON files (batch_id);
    """,
    # Lookups by file, batch and result name, so requests never scan the whole history.
    """
    CREATE INDEX generations_by_file ON generations (file_id);
    CREATE INDEX generations_by_result ON generations (result_file);
    CREATE INDEX generations_by_preview ON generations (preview_file);
    CREATE INDEX jobs_by_batch ON jobs (batch_id);
    """,
    # The claim holders, looked up on every check for dead owners without scanning the history.
    """
    CREATE INDEX generations_by_claim ON generations (claimed_by) WHERE claimed_by IS NOT NULL;
    """,
    # When a FAL submit was sent and its answer not yet stored: a crash in between leaves a
    # request FAL may have accepted, which is never sent a second time.
    """
    ALTER TABLE generations ADD COLUMN submit_sent_at REAL;
    """,
]

BUSY_TIMEOUT_MS = 10_000

# One writer at a time per database file within this process: threads queue on a lock that wakes
# them at once, instead of on SQLite's busy handler, which sleeps in growing steps.
_write_locks = {}
_write_locks_guard = threading.Lock()


class Connection(sqlite3.Connection):
    """A connection that knows its database file, that file's in-process write lock, and
    whether it was closed."""

    write_lock: threading.Lock
    path: str
    closed = False

    def close(self):
        self.closed = True
        super().close()


def _write_lock_for(path):
    """Return the process-wide write lock of a database file."""
    key = os.path.realpath(path)
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.RLock())


def database_path(app):
    """Return the absolute path of the app's SQLite file."""
    return os.path.join(app.instance_path, app.config["DATABASE_NAME"])


def connect(path):
    """Open a connection in autocommit mode with WAL, a busy timeout and foreign keys."""
    conn = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
        factory=Connection,
    )
    conn.path = path
    conn.write_lock = _write_lock_for(path)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextlib.contextmanager
def transaction(conn):
    """Run the block in one IMMEDIATE transaction: commit on success, roll back on error."""
    with conn.write_lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT, too, must not leave this connection inside a transaction; and
            # SQLite may already have rolled back by itself (SQLITE_FULL).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


class _Held:
    """A request thread's connection, closed when the thread ends and lets go of it."""

    def __init__(self, conn):
        self.conn = conn

    def __del__(self):
        self.conn.close()


# A request thread keeps its connection between requests (gunicorn's threads live as long as the
# server): opening one, with its four PRAGMAs, cost more than a status request's queries. It is
# never shared with another thread, and holds one database at a time (tests switch apps).
_request_threads = threading.local()
_request_connections = weakref.WeakSet()
_request_connections_lock = threading.Lock()


def get_db():
    """Return the current request's connection: its thread's, opened on the thread's first use."""
    conn = g.get("db")
    if conn is None:
        path = database_path(current_app)
        held = getattr(_request_threads, "held", None)
        conn = held.conn if held is not None else None
        if conn is None or conn.closed or conn.path != path:
            _request_threads.held = None  # closes another database's connection
            conn = connect(path)
            _request_threads.held = _Held(conn)
            with _request_connections_lock:
                _request_connections.add(conn)
        g.db = conn
    return conn


def close_db(_exc=None):
    """Teardown: leave the request's connection to its thread, outside any transaction."""
    conn = g.pop("db", None)
    if conn is not None and not conn.closed and conn.in_transaction:
        conn.execute("ROLLBACK")  # begun outside transaction() and never ended


def close_request_connections(app):
    """Close the request threads' connections to the app's database (no request runs: at exit)."""
    path = database_path(app)
    with _request_connections_lock:
        connections = [conn for conn in _request_connections if conn.path == path]
    for conn in connections:
        conn.close()


class ThreadConnections:
    """One connection per thread for code that runs outside a request (pool, CLI)."""

    def __init__(self, path):
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all = []

    def get(self):
        """Return this thread's connection, opening it on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close_all(self):
        """Close every connection opened through this object."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def schema_version(conn):
    """Return the schema version recorded in the database."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn):
    """Apply every migration newer than the database's version, each in its own transaction."""
    for version, script in enumerate(MIGRATIONS, start=1):
        if schema_version(conn) >= version:
            continue
        with transaction(conn):
            # Re-read inside the lock: another process may have migrated meanwhile.
            if schema_version(conn) >= version:
                continue
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    return schema_version(conn)


def init_app(app):
    """Migrate the schema now and register the per-request teardown."""
    conn = connect(database_path(app))
    try:
        migrate(conn)
    finally:
        conn.close()
    app.extensions["db.threads"] = ThreadConnections(database_path(app))
    app.teardown_appcontext(close_db)
