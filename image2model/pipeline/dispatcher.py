"""The dispatcher: claims due generations in SQLite and runs their next step on the pool."""

import json
import logging
import threading
import time

from image2model import generators, processes
from image2model.pipeline import claims
from image2model.pipeline.held import HeldSteps
from image2model.pipeline.runs import GenerationRun
from image2model.pipeline.slots import fal_slots, local_slots
from image2model.pool import get_pool
from image2model.store import events, jobs

logger = logging.getLogger(__name__)

# Leases held by a live process are renewed well before they run out, so a slow step (a FAL call
# retrying for minutes) is never claimed a second time while it still runs.
RENEW_EVERY = 30.0
IDLE_WAIT = 30.0
# How often claims are checked for owners of this host that died (a crashed process that was
# still a zombie when this one started, or one that exited without giving them back).
DEAD_OWNER_CHECK_EVERY = 5.0


class Dispatcher:
    """A thread that finds due work, claims it and hands it to the pool; woken on change.

    A step that only has to run again later (a FAL poll that changed nothing) keeps its claim
    and waits in `held`, so polling costs no claim and release in SQLite per poll.
    """

    def __init__(self, app, generators):
        self.app = app
        self.generators = generators
        self.identity = processes.worker_identity()
        self.connections = app.extensions["db.threads"]
        self.pool = get_pool(app)
        self.held = HeldSteps()
        # Inline mode (no threads) runs every due step at once, as the tests expect: neither
        # FAL steps nor local ones are limited there.
        self.fal_slots = fal_slots(self.pool.size) if self.pool.size else None
        self.local_slots = local_slots(self.pool.size) if self.pool.size else None
        self._alarm = threading.Event()
        self._look_in_database = True
        self._database_due_at = 0.0
        self._cap_reached = False  # at the last look: queued FAL work waits for a release
        self._thread = None
        self._renewed_at = 0.0
        self._dead_checked_at = 0.0

    def start(self):
        """Release dead owners' claims and start dispatching."""
        claims.release_dead_owners(self.connections.get())
        self._dead_checked_at = time.time()
        if self.pool.size == 0:
            return  # inline mode: tests call run_due() themselves
        self._thread = threading.Thread(
            target=self.loop, name="image2model-dispatcher", daemon=True
        )
        self._thread.start()

    def wake(self):
        """Make the dispatcher look for work in the database now."""
        self._look_in_database = True
        self._alarm.set()

    def loop(self):
        """Dispatch until the pool stops; one failure never ends the loop."""
        while not self.pool.stopping.is_set():
            # Cleared before looking, so an alarm raised meanwhile cuts the wait short.
            self._alarm.clear()
            try:
                if self._look_in_database or time.time() >= self._database_due_at:
                    wait = self.run_due()
                else:
                    wait = min(self._database_due_at - time.time(), self.run_held())
            except Exception:
                if self.pool.stopping.is_set():
                    break  # the pool refused a step because it stops: nothing failed
                logger.exception("Dispatcher pass failed")
                wait = 1.0
            self._alarm.wait(timeout=max(0.0, wait))

    def run_due(self):
        """Fail overdue generations, start due ones; return seconds until the next due time."""
        self._look_in_database = False
        wait = self.run_due_in_database()
        self._database_due_at = time.time() + wait
        return min(wait, self.run_held())

    def run_held(self):
        """Start the held generations that are due; return seconds until the next one."""
        now = time.time()
        while (due := self.held.pop_next_due(now)) is not None:
            if not self.start_step(due[1], due[0]):
                break
        next_due_at = self.held.next_due_at()
        if next_due_at is None:
            return IDLE_WAIT
        if next_due_at <= now:
            return IDLE_WAIT  # held back for want of a place: a step that ends wakes us
        return max(0.0, next_due_at - time.time())

    def start_step(self, generation_id, due_at):
        """Start a held FAL step if a FAL slot is free, else keep it held; say which."""
        if self.fal_slots is None:  # inline mode
            self.pool.submit(self.run_step, generation_id, due_at)
            return True
        if not self.fal_slots.try_begin():
            self.held.add(due_at, generation_id)
            return False
        try:
            self.pool.submit(self.run_fal_step, generation_id, due_at)
        except RuntimeError:
            # The pool is shutting down; stop() gives the claim back.
            self.fal_slots.end()
            raise
        return True

    def run_due_in_database(self):
        """Fail overdue generations and start the due unclaimed ones; return seconds to wait."""
        conn = self.connections.get()
        now = time.time()
        # Until this pass knows, a step that ends during it wakes the dispatcher: it may free the
        # place under the cap that this pass is about to find taken.
        self._cap_reached = True
        self.renew_leases(conn, now)
        if now - self._dead_checked_at >= DEAD_OWNER_CHECK_EVERY:
            claims.release_dead_owners(conn)
            self._dead_checked_at = now
        self.expire_overdue(conn, now)
        # A queued generation being submitted right now (claimed) counts as in flight too.
        remote = json.dumps(generators.names(remote=True))
        in_flight = conn.execute(jobs.IN_FLIGHT_COUNT, (remote, *jobs.IN_FLIGHT, now)).fetchone()[0]
        free_submits = max(0, int(self.app.config["MAX_FAL_IN_FLIGHT"]) - in_flight)
        if self.local_slots is not None:
            self.local_slots.waited = True  # likewise for a local step ending during this pass
        free_local = self.local_slots.free() if self.local_slots is not None else None
        rows = conn.execute(jobs.DUE_UNCLAIMED, (*jobs.UNFINISHED, now, now)).fetchall()
        chosen, fal_steps, local_chosen, local_waits = [], set(), 0, False
        for row in rows:
            if self.generators[row["model_type"]].remote:
                if row["state"] == "queued":
                    if free_submits == 0:
                        continue
                    free_submits -= 1
                fal_steps.add(row["id"])
            elif free_local is not None:
                if local_chosen >= free_local:
                    local_waits = True
                    continue
                local_chosen += 1
            chosen.append(row["id"])
        local_taken = 0
        for generation_id in claims.take(conn, self.identity, chosen, now):
            if generation_id in fal_steps:
                # FAL steps take turns in the FAL slots, the earliest due first.
                self.held.add(now, generation_id)
            else:
                self.start_local_step(generation_id)
                local_taken += 1
        self._cap_reached = free_submits == 0
        # Slots meant for rows another process took meanwhile are free: the waiting rows are due.
        local_full = local_waits and local_taken == local_chosen
        local = json.dumps(generators.names(remote=False))
        if self.local_slots is not None:
            self.local_slots.waited = local_full
        # Claimed work, and work blocked by the FAL cap or by busy local slots, is woken by a
        # release, not a timer; every unfinished generation's deadline still counts.
        blocked = (remote if self._cap_reached else "[]", local if local_full else "[]")
        upcoming = conn.execute(jobs.NEXT_DUE, (*blocked, *jobs.UNFINISHED)).fetchone()[0]
        wait = IDLE_WAIT if upcoming is None else max(0.01, upcoming - time.time())
        return min(wait, IDLE_WAIT, RENEW_EVERY)

    def renew_leases(self, conn, now):
        """Extend the leases this process holds, at most every RENEW_EVERY seconds."""
        if now - self._renewed_at < RENEW_EVERY:
            return
        claims.renew(conn, self.identity, now)
        self._renewed_at = now

    def expire_overdue(self, conn, now):
        """Fail every unfinished generation past its deadline with TIMEOUT."""
        overdue = conn.execute(jobs.OVERDUE, (*jobs.UNFINISHED, now)).fetchall()
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

    def start_local_step(self, generation_id):
        """Run a local generator's step on the pool, in one of the local slots (if limited)."""
        if self.local_slots is None:
            self.pool.submit(self.run_step, generation_id)
            return
        self.local_slots.begin()
        try:
            self.pool.submit(self.run_local_step, generation_id)
        except BaseException:
            self.local_slots.end()
            raise

    def run_local_step(self, generation_id):
        """Run a local step, then free its slot, waking the dispatcher if work waits for it."""
        try:
            self.run_step(generation_id)
        finally:
            if self.local_slots.end():
                self.wake()

    def run_fal_step(self, generation_id, due_at):
        """Run a FAL step in its slot, then let a held-back one start."""
        try:
            self.run_step(generation_id, due_at)
        finally:
            if self.fal_slots.end():
                self._alarm.set()

    def run_step(self, generation_id, due_at=None):
        """Run one step of a generation; any exception ends it as failed, never silently."""
        conn = self.connections.get()
        release_fields, keep_claim, ended = {}, False, False
        try:
            row = conn.execute(
                "SELECT g.*, j.model_type, j.options, f.stored_path, f.filename, f.content_type"
                " FROM generations g"
                " JOIN jobs j USING (job_id) JOIN files f USING (file_id) WHERE g.id = ?",
                (generation_id,),
            ).fetchone()
            if row is None or row["state"] in jobs.TERMINAL or row["claimed_by"] != self.identity:
                return
            run = GenerationRun(self.app, conn, row, due_at)
            try:
                self.generators[row["model_type"]].step(run)
            except Exception:
                logger.exception("Generation %s failed unexpectedly", generation_id)
                run.fail("PROCESSING_ERROR", "Internal processing error")
            release_fields, keep_claim, ended = run.release_fields, run.keep_claim, run.ended
        finally:
            if ended:
                # The terminal transition released the claim; an ending frees nothing else
                # than a place under MAX_FAL_IN_FLIGHT.
                if self._cap_reached:
                    self.wake()
            elif keep_claim and self.pool.alive:
                if self.held.add(release_fields["next_run_at"], generation_id):
                    self._alarm.set()
            else:
                claims.release(conn, self.identity, generation_id, release_fields)
                self.wake()

    def stop(self):
        """Stop dispatching and release every claim this process holds."""
        self.pool.stopping.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.held.clear()
        claims.release_all(self.connections.get(), self.identity)
