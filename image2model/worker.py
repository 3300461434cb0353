"""The dispatcher: claims due generations in SQLite and runs their next step on the pool."""

import logging
import socket
import threading
import time

import psutil

from image2model import db, events, jobs
from image2model.pool import get_pool
from image2model.runs import GenerationRun

logger = logging.getLogger(__name__)

LEASE_SECONDS = 300
# Leases held by a live process are renewed well before they run out, so a slow step (a FAL call
# retrying for minutes) is never claimed a second time while it still runs.
RENEW_EVERY = 30.0
IDLE_WAIT = 30.0


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
        return f"{psutil.Process(int(pid_text)).create_time():.3f}" != started
    except (psutil.NoSuchProcess, ValueError):
        return True


class Dispatcher:
    """A thread that finds due work, claims it and hands it to the pool; woken on change."""

    def __init__(self, app, generators):
        self.app = app
        self.generators = generators
        self.identity = worker_identity()
        self.connections = app.extensions["db.threads"]
        self.pool = get_pool(app)
        self._wake = threading.Event()
        self._thread = None
        self._renewed_at = 0.0

    def start(self):
        """Release dead owners' claims and start dispatching."""
        self.release_dead_claims()
        if self.pool.size == 0:
            return  # inline mode: tests call run_due() themselves
        self._thread = threading.Thread(
            target=self.loop, name="image2model-dispatcher", daemon=True
        )
        self._thread.start()

    def wake(self):
        """Make the dispatcher look for work now."""
        self._wake.set()

    def loop(self):
        """Dispatch until the pool stops; one failure never ends the loop."""
        while not self.pool.stopping.is_set():
            try:
                wait = self.run_due()
            except Exception:
                logger.exception("Dispatcher pass failed")
                wait = 1.0
            self._wake.wait(timeout=wait)
            self._wake.clear()

    def release_dead_claims(self):
        """Free claims held by processes of this host that no longer exist."""
        conn = self.connections.get()
        owners = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT claimed_by FROM generations WHERE claimed_by IS NOT NULL"
            )
        ]
        for owner in filter(owner_is_dead, owners):
            with db.transaction(conn):
                conn.execute(
                    "UPDATE generations SET claimed_by = NULL, lease_until = NULL"
                    " WHERE claimed_by = ?",
                    (owner,),
                )
            logger.info("Released claims of dead worker %s", owner)

    def run_due(self):
        """Fail overdue generations, start due ones; return seconds until the next due time."""
        conn = self.connections.get()
        now = time.time()
        self.renew_leases(conn, now)
        self.expire_overdue(conn, now)
        # A queued generation being submitted right now (claimed) counts as in flight too.
        in_flight = conn.execute(
            "SELECT COUNT(*) FROM generations g JOIN jobs j USING (job_id)"
            " WHERE j.model_type = 'tripo3d' AND (g.state IN (?, ?, ?)"
            " OR (g.state = 'queued' AND g.claimed_by IS NOT NULL AND g.lease_until >= ?))",
            (*jobs.IN_FLIGHT, now),
        ).fetchone()[0]
        free_submits = max(0, int(self.app.config["MAX_FAL_IN_FLIGHT"]) - in_flight)
        rows = conn.execute(
            "SELECT g.id, g.state, j.model_type FROM generations g JOIN jobs j USING (job_id)"
            " WHERE g.state NOT IN (?, ?, ?) AND g.next_run_at <= ?"
            " AND (g.claimed_by IS NULL OR g.lease_until < ?) ORDER BY g.next_run_at, g.id",
            (*jobs.TERMINAL, now, now),
        ).fetchall()
        chosen = []
        for row in rows:
            if row["state"] == "queued" and row["model_type"] == "tripo3d":
                if free_submits == 0:
                    continue
                free_submits -= 1
            chosen.append(row["id"])
        for generation_id in self.claim(conn, chosen, now):
            self.pool.submit(self.run_step, generation_id)
        blocked = "tripo3d" if free_submits == 0 else ""
        # Claimed work and FAL work blocked by the cap are woken by a release, not a timer;
        # every unfinished generation's deadline still counts.
        upcoming = conn.execute(
            "SELECT MIN(CASE WHEN g.claimed_by IS NOT NULL"
            " OR (g.state = 'queued' AND j.model_type = ?) THEN g.deadline_at"
            " ELSE MIN(g.next_run_at, g.deadline_at) END)"
            " FROM generations g JOIN jobs j USING (job_id) WHERE g.state NOT IN (?, ?, ?)",
            (blocked, *jobs.TERMINAL),
        ).fetchone()[0]
        wait = IDLE_WAIT if upcoming is None else max(0.01, upcoming - time.time())
        return min(wait, IDLE_WAIT, RENEW_EVERY)

    def renew_leases(self, conn, now):
        """Extend the leases this process holds, at most every RENEW_EVERY seconds."""
        if now - self._renewed_at < RENEW_EVERY:
            return
        with db.transaction(conn):
            conn.execute(
                "UPDATE generations SET lease_until = ? WHERE claimed_by = ?",
                (now + LEASE_SECONDS, self.identity),
            )
        self._renewed_at = now

    def expire_overdue(self, conn, now):
        """Fail every unfinished generation past its deadline with TIMEOUT."""
        overdue = conn.execute(
            "SELECT g.*, j.model_type FROM generations g JOIN jobs j USING (job_id)"
            " WHERE g.state NOT IN (?, ?, ?) AND g.deadline_at < ?",
            (*jobs.TERMINAL, now),
        ).fetchall()
        for row in overdue:
            message = "The generation did not finish before its deadline"
            # A step still running keeps its claim until it ends, so the job is not deleted
            # under it; the step sees the terminal state and stops.
            if jobs.transition(
                conn,
                row["id"],
                "failed",
                release_claim=False,
                error_code="TIMEOUT",
                error_message=message,
            ):
                logger.warning("Generation %s timed out", row["id"])
                events.notifier(self.app).notify()
                cancel = getattr(self.generators[row["model_type"]], "cancel", None)
                if cancel is not None:
                    self.pool.submit(cancel, self.app, row)

    def claim(self, conn, generation_ids, now):
        """Take the leases of generations in one transaction; return the ids this process got."""
        if not generation_ids:
            return []
        claimed = []
        with db.transaction(conn):
            for generation_id in generation_ids:
                cursor = conn.execute(
                    "UPDATE generations SET claimed_by = ?, lease_until = ? WHERE id = ?"
                    " AND (claimed_by IS NULL OR lease_until < ?)",
                    (self.identity, now + LEASE_SECONDS, generation_id, now),
                )
                if cursor.rowcount == 1:
                    claimed.append(generation_id)
        return claimed

    def run_step(self, generation_id):
        """Run one step of a generation; any exception ends it as failed, never silently."""
        conn = self.connections.get()
        release_fields = {}
        try:
            row = conn.execute(
                "SELECT g.*, j.model_type, j.options, f.stored_path, f.filename, f.content_type"
                " FROM generations g"
                " JOIN jobs j USING (job_id) JOIN files f USING (file_id) WHERE g.id = ?",
                (generation_id,),
            ).fetchone()
            if row is None or row["state"] in jobs.TERMINAL or row["claimed_by"] != self.identity:
                return
            run = GenerationRun(self.app, conn, row)
            try:
                self.generators[row["model_type"]].step(run)
            except Exception:
                logger.exception("Generation %s failed unexpectedly", generation_id)
                run.fail("PROCESSING_ERROR", "Internal processing error")
            release_fields = run.release_fields
        finally:
            self.release(conn, generation_id, release_fields)
            self.wake()

    def release(self, conn, generation_id, fields):
        """Give up the claim of a generation, storing its schedule fields with it."""
        columns = "".join(f", {name} = ?" for name in fields)
        with db.transaction(conn):
            conn.execute(
                f"UPDATE generations SET claimed_by = NULL, lease_until = NULL{columns}"
                " WHERE id = ? AND claimed_by = ?",
                (*fields.values(), generation_id, self.identity),
            )

    def stop(self):
        """Stop dispatching and hand back every claim this process holds."""
        self.pool.stopping.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        conn = self.connections.get()
        with db.transaction(conn):
            conn.execute(
                "UPDATE generations SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ?",
                (self.identity,),
            )


def init_app(app):
    """Create and start the dispatcher with the generators this server has."""
    from image2model.generators import local, tripo3d

    dispatcher = Dispatcher(app, {"tripo3d": tripo3d, "relief": local})
    app.extensions["image2model.dispatcher"] = dispatcher
    dispatcher.start()


def get_dispatcher(app):
    """Return the app's dispatcher."""
    return app.extensions["image2model.dispatcher"]


def begin_shutdown(app):
    """Stop taking work and wake every waiter (event streams end, the dispatcher stops)."""
    get_pool(app).stopping.set()
    events.notifier(app).notify()
    dispatcher = app.extensions.get("image2model.dispatcher")
    if dispatcher is not None:
        dispatcher.wake()


def shutdown(app):
    """Stop dispatching, let running steps finish, and hand back this process's claims."""
    retention = app.extensions.get("image2model.retention")
    if retention is not None:
        retention.stop()  # no cleanup starts while the pool winds down
    dispatcher = app.extensions.get("image2model.dispatcher")
    get_pool(app).shutdown(wait=True)
    if dispatcher is not None:
        dispatcher.stop()
