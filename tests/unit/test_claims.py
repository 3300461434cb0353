"""Claim owners: this process is alive to itself, an owner that cannot be read is not dead."""

import time

import psutil
import pytest

from image2model import processes
from image2model.pipeline import claims, lifecycle
from image2model.store import db
from tests import images


def claim_all(app, owner):
    """Let `owner` hold every generation's claim, with a lease that runs another minute."""
    conn = db.connect(db.database_path(app))
    try:
        with db.transaction(conn):
            conn.execute(
                "UPDATE generations SET claimed_by = ?, lease_until = ?", (owner, time.time() + 60)
            )
    finally:
        conn.close()


def release_dead_owners(app):
    """Run the check for dead owners once; return every generation's claim owner."""
    conn = db.connect(db.database_path(app))
    try:
        claims.release_dead_owners(conn)
    finally:
        conn.close()
    return [row["claimed_by"] for row in images.query(app, "SELECT * FROM generations")]


@pytest.fixture
def step_clock(monkeypatch):
    """Return a function that steps the system clock 7 s forward as psutil sees it.

    psutil adds the boot time (from /proc/stat, which follows the wall clock) to each
    process's start, so every start time it reports moves with a step (NTP at boot, a VM
    resumed): a process's own identity, worked out before, no longer matches it.
    """
    booted = psutil.boot_time()
    return lambda: monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: booted + 7)


def test_this_process_is_alive_to_itself_after_a_clock_step(step_clock):
    identity = processes.worker_identity()
    step_clock()
    assert not processes.owner_is_dead(identity)
    assert processes.worker_identity() == identity


def test_a_clock_step_does_not_hand_back_this_processs_own_claims(app, client, step_clock):
    identity = lifecycle.get_dispatcher(app).identity
    images.uploaded(client, [("a.png", images.png())])
    claim_all(app, identity)
    step_clock()
    assert release_dead_owners(app) == [identity]


def test_an_owner_that_cannot_be_read_is_left_to_its_lease(app, client, monkeypatch):
    images.uploaded(client, [("a.png", images.png())])
    owner = f"{processes.worker_identity().split(':', 1)[0]}:4242:1.000"
    claim_all(app, owner)

    def hidden(pid=None):
        raise psutil.AccessDenied(pid)  # /proc mounted with hidepid=1: another user's process

    monkeypatch.setattr(psutil, "Process", hidden)
    # It must not raise either: it runs at the start of every dispatcher pass.
    assert release_dead_owners(app) == [owner]
