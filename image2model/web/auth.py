"""Who is calling: Bearer API keys resolved to a principal, and the checks views rely on."""

import hmac
import sys
from dataclasses import dataclass

import click
from flask import current_app, g, request

from image2model.errors import ApiError
from image2model.store import db
from image2model.web import keys


@dataclass(frozen=True)
class Principal:
    """The owner of a request: a stable owner id, a display name and the admin scope."""

    owner: str
    name: str
    is_admin: bool


def _configured_keys(app):
    """Return `(hash, principal)` pairs for the keys given in configuration."""
    cached = app.extensions.get("auth.configured")
    if cached is None:
        cached = []
        for index, key in enumerate(app.config["API_KEYS"], start=1):
            key_hash = keys.hash_key(key)
            cached.append((key_hash, Principal(f"env:{key_hash[:16]}", f"env-{index}", False)))
        if app.config["ADMIN_API_KEY"]:
            cached.append(
                (keys.hash_key(app.config["ADMIN_API_KEY"]), Principal("admin", "admin", True))
            )
        app.extensions["auth.configured"] = cached
    return cached


def bearer_key():
    """Return the key of an `Authorization: Bearer KEY` header, or None if absent or malformed."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or " " in key:
        return None
    return key


def resolve_principal():
    """Return the request's principal (cached on `g`), or None for a missing or unknown key."""
    if "principal" in g:
        return g.principal
    principal = None
    key = bearer_key()
    if key is not None:
        key_hash = keys.hash_key(key)
        # Compare against every configured key so timing does not reveal which one matched.
        for configured_hash, candidate in _configured_keys(current_app):
            if hmac.compare_digest(configured_hash, key_hash):
                principal = candidate
        if principal is None:
            row = keys.find_stored_key(db.get_db(), key_hash)
            if row is not None:
                principal = Principal(f"key:{row['id']}", row["name"], bool(row["is_admin"]))
    g.principal = principal
    return principal


def require_key():
    """Before-request hook: reject a request without a valid API key."""
    if request.method == "OPTIONS":
        return
    if resolve_principal() is None:
        raise ApiError(
            "AUTHENTICATION_REQUIRED",
            "A valid API key is required: send 'Authorization: Bearer <key>'",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="image2model"'},
        )


def require_admin():
    """Before-request hook: reject a request whose key lacks the admin scope."""
    if request.method == "OPTIONS":
        return
    require_key()
    if not g.principal.is_admin:
        raise ApiError("INVALID_API_KEY", "This endpoint needs an admin API key", status=403)


def current_principal():
    """Return the authenticated principal of the current request."""
    return g.principal


def init_app(app):
    """Register the `keys` CLI and, when serving, create a development key if none exists."""
    app.cli.add_command(keys.keys_cli)
    if click.get_current_context(silent=True) is not None:
        return  # a CLI run never mints a development key
    conn = db.connect(db.database_path(app))
    try:
        keys.ensure_development_key(app, conn, app.config.get("DEV_KEY_STREAM") or sys.stderr)
    finally:
        conn.close()
