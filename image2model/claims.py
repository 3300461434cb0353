"""Claims on generations in SQLite: who owns one (host, pid, start time) and its lease."""

import logging
import socket

import psutil

from image2model import db

logger = logging.getLogger(__name__)

LEASE_SECONDS = 300


def worker_identity():
    """Return this process's claim owner: host, pid and process start time (pid reuse safe)."""
    process = psutil.Process()
    return f"{socket.gethostname()}:{process.pid}:{process.create_time():.3f}"


def owner_is_dead(owner):
    """Return True if a claim owner on this host no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return False  # another machine's claim expires by its lease
    try:
        process = psutil.Process(int(pid_text))
        if f"{process.create_time():.3f}" != started:
            return True  # the pid was reused
        # A killed worker stays a zombie until its parent reaps it: after a crash its orphan
        # waits for init, and in a container whose PID 1 never reaps, forever.
        return process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except (psutil.NoSuchProcess, ValueError):
        return True


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


def give_back(conn, owner, generation_id, fields):
    """Give up the claim of a generation, storing its schedule fields with it."""
    columns = "".join(f", {name} = ?" for name in fields)
    with db.transaction(conn):
        conn.execute(
            f"UPDATE generations SET claimed_by = NULL, lease_until = NULL{columns}"
            " WHERE id = ? AND claimed_by = ?",
            (*fields.values(), generation_id, owner),
        )


def give_back_all(conn, owner):
    """Give up every claim of `owner` (it stops, or it is dead)."""
    with db.transaction(conn):
        conn.execute(
            "UPDATE generations SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ?",
            (owner,),
        )


def release_dead_owners(conn):
    """Free the claims of processes of this host that no longer exist."""
    for owner in filter(owner_is_dead, owners(conn)):
        give_back_all(conn, owner)
        logger.info("Released claims of dead worker %s", owner)
