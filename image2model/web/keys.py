"""API keys: generation, hashing, the stored keys in SQLite and the `keys` CLI commands."""

import hashlib
import secrets

import click
from flask import current_app
from flask.cli import AppGroup

from image2model import clock
from image2model.store import db

KEY_PREFIX = "i2m_"

keys_cli = AppGroup("keys", help="Create, list and revoke stored API keys.")


def new_key():
    """Return a fresh random API key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key):
    """Return the hex SHA-256 of a key: keys are random, so a plain hash is enough to store."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(conn, name, is_admin=False):
    """Store a new key and return `(key, row id)`; the key itself is never stored."""
    key = new_key()
    with db.transaction(conn):
        cursor = conn.execute(
            "INSERT INTO api_keys (name, key_hash, key_prefix, is_admin, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (name, hash_key(key), key[: len(KEY_PREFIX) + 6], int(is_admin), clock.iso()),
        )
    return key, cursor.lastrowid


def find_stored_key(conn, key_hash):
    """Return the active stored key row with this hash, or None."""
    return conn.execute(
        "SELECT id, name, is_admin FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
        (key_hash,),
    ).fetchone()


def list_keys(conn):
    """Return every stored key row (without hashes), oldest first."""
    return conn.execute(
        "SELECT id, name, key_prefix, is_admin, created_at, revoked_at FROM api_keys ORDER BY id"
    ).fetchall()


def revoke_key(conn, key_id):
    """Mark a key revoked; return True if an active key was revoked."""
    with db.transaction(conn):
        cursor = conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (clock.iso(), key_id),
        )
    return cursor.rowcount == 1


def count_active_keys(conn):
    """Return how many stored keys are not revoked."""
    return conn.execute("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL").fetchone()[0]


def ensure_development_key(app, conn, stream):
    """Create and announce an admin development key when no key of any kind is configured."""
    if app.config["API_KEYS"] or app.config["ADMIN_API_KEY"] or count_active_keys(conn):
        return None
    key, _ = create_key(conn, "development", is_admin=True)
    stream.write(
        "\n  image2model: no API key was configured, so a development key was created.\n"
        f"  It is shown once, now:  {key}\n"
        "  Use it as 'Authorization: Bearer <key>'."
        " Manage keys with 'flask --app image2model keys'.\n\n"
    )
    stream.flush()
    return key


@keys_cli.command("create")
@click.option("--name", default="default", show_default=True, help="A label for the key.")
@click.option("--admin", is_flag=True, help="Grant the admin scope (admin and logs endpoints).")
def create_command(name, admin):
    """Create a key and print it once."""
    conn = db.connect(db.database_path(current_app))
    try:
        key, key_id = create_key(conn, name, is_admin=admin)
    finally:
        conn.close()
    click.echo(f"Created key {key_id} ({'admin' if admin else 'user'}) named {name!r}:")
    click.echo(key)
    click.echo("It is not stored in clear and will not be shown again.", err=True)


@keys_cli.command("list")
def list_command():
    """List stored keys (never the keys themselves)."""
    conn = db.connect(db.database_path(current_app))
    try:
        rows = list_keys(conn)
    finally:
        conn.close()
    if not rows:
        click.echo("No stored keys.")
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        scope = "admin" if row["is_admin"] else "user"
        click.echo(
            f"{row['id']}\t{row['name']}\t{row['key_prefix']}…\t{scope}\t"
            f"created {row['created_at']}\t{state}"
        )


@keys_cli.command("revoke")
@click.argument("key_id", type=int)
def revoke_command(key_id):
    """Revoke a stored key by its id."""
    conn = db.connect(db.database_path(current_app))
    try:
        revoked = revoke_key(conn, key_id)
    finally:
        conn.close()
    if not revoked:
        raise click.ClickException(f"No active key with id {key_id}.")
    click.echo(f"Revoked key {key_id}.")
