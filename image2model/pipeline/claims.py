"""Claims on generations in SQLite: who owns one (host, pid, start time) and its lease."""

import logging

from image2model import processes
from image2model.store import db

logger = logging.getLogger(__name__)

LEASE_SECONDS = 300


def owners(conn):
    """Return every owner that holds a claim now."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT claimed_by FROM generations WHERE claimed_by IS NOT NULL"
        )
    ]


def take(conn, owner, generation_ids, now):
    """Take the leases of generations in one transaction; return the ids `owner` got."""
    if not generation_ids:
        return []
    taken = []
    with db.transaction(conn):
        for generation_id in generation_ids:
            cursor = conn.execute(
                "UPDATE generations SET claimed_by = ?, lease_until = ? WHERE id = ?"
                " AND (claimed_by IS NULL OR lease_until < ?)",
                (owner, now + LEASE_SECONDS, generation_id, now),
            )
            if cursor.rowcount == 1:
                taken.append(generation_id)
    return taken


def renew(conn, owner, now):
    """Extend every lease `owner` holds."""
    with db.transaction(conn):
        conn.execute(
            "UPDATE generations SET lease_until = ? WHERE claimed_by = ?",
            (now + LEASE_SECONDS, owner),
        )


def release(conn, owner, generation_id, fields):
    """Give up the claim of a generation, storing its schedule fields with it."""
    columns = "".join(f", {name} = ?" for name in fields)
    with db.transaction(conn):
        conn.execute(
            f"UPDATE generations SET claimed_by = NULL, lease_until = NULL{columns}"
            " WHERE id = ? AND claimed_by = ?",
            (*fields.values(), generation_id, owner),
        )


def release_all(conn, owner):
    """Give up every claim of `owner` (it stops, or it is dead)."""
    with db.transaction(conn):
        conn.execute(
            "UPDATE generations SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ?",
            (owner,),
        )


def release_dead_owners(conn):
    """Free the claims of processes of this host that no longer exist."""
    for owner in filter(processes.owner_is_dead, owners(conn)):
        release_all(conn, owner)
        logger.info("Released claims of dead worker %s", owner)
