"""Claims on generations in SQLite: who owns one (host, pid, start time) and its lease."""

import logging
import os
import socket

import psutil

from image2model import db

logger = logging.getLogger(__name__)

LEASE_SECONDS = 300
_identities = {}  # pid -> this process's identity, as it was first worked out


def worker_identity():
    """Return this process's claim owner: host, pid and process start time (pid reuse safe).

    Worked out once per process: psutil derives a start time from the boot time, which moves
    when the system clock is stepped (NTP, a resumed VM), so a second reading may differ.
    """
    pid = os.getpid()
    if pid not in _identities:
        started = psutil.Process(pid).create_time()
        _identities[pid] = f"{socket.gethostname()}:{pid}:{started:.3f}"
    return _identities[pid]


def owner_is_dead(owner):
    """Return True if a claim owner on this host no longer runs."""
    if owner == worker_identity():
        return False  # this process, even if the clock was stepped since it began
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return False  # another machine's claim expires by its lease
    try:
        return process_is_dead(int(pid_text), started)
    except ValueError:
        return True


def process_is_dead(pid, started=None):
    """Return True if no process of this host runs as `pid` (begun at `started`, if given).

    A killed process stays a zombie until its parent reaps it: after a crash its orphan waits
    for init, and in a container whose PID 1 never reaps, forever. A zombie runs nothing.
    """
    try:
        process = psutil.Process(pid)
        if started is not None and f"{process.create_time():.3f}" != started:
            return True  # the pid was reused
        return process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False  # cannot tell (a hardened /proc): a claim's lease decides


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
