"""How many steps run at once: FAL steps more while they wait on FAL and fewer while they load
the GIL; local generators' steps no more than the cores."""

import os
import threading
import time

WINDOW = 0.05  # seconds of steps' CPU one adjustment looks at
BUSY = 0.8  # steps' CPU per second of wall time above which the GIL counts as saturated
IDLE = 0.5  # below it, with work held back, there is room for one more step


def cpu_reader():
    """Return a function that reads the calling thread's CPU time from any thread, or None."""
    try:
        clock_id = time.pthread_getcpuclockid(threading.get_ident())
    except (AttributeError, OSError):
        return None  # no per-thread clocks here: a step's CPU is counted when it ends
    return lambda: time.clock_gettime(clock_id)


class StepLimit:
    """Running steps against a limit that starts low, grows while they wait and halves while
    their CPU saturates the GIL."""

    # The steps' own CPU is measured, not their wall time: waiting for the GIL lengthens a step
    # as waiting for FAL does, and would read as room for more. More threads than the GIL can
    # serve only take turns at it, and each turn costs a switch. The limit starts at its floor:
    # a batch's first steps open TLS connections, and eight at once on a saturated GIL only
    # delay each other. Running steps' CPU is read while they run, so steps that wait on FAL
    # for seconds (large uploads) raise the limit before any of them ends.

    def __init__(self, most, least=3, clock=time.monotonic):
        self.most = max(1, int(most))
        self.least = min(least, self.most)
        self.limit = self.least
        self.running = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._window_cpu = 0.0
        self._readers = {}  # step (its thread's CPU reader) -> CPU seconds counted so far
        self._held_back = False  # in this window, for the next adjustment
        self._waiting = False  # since the last free slot was announced

    def try_start(self):
        """Count a step as running if the limit allows; return whether it may start."""
        with self._lock:
            self._adjust()
            if self.running < self.limit:
                self.running += 1
                return True
            self._held_back = self._waiting = True
            return False

    def begin(self, reader):
        """Count the CPU of a step that try_start let in from now on, read by `reader`."""
        if reader is not None:
            with self._lock:
                self._readers[reader] = reader()

    def finished(self, reader, cpu_seconds=0.0, wall_seconds=0.0):
        """Count a step done; say whether a held-back one may start.

        `cpu_seconds` over `wall_seconds` is the step's CPU where no reader followed it.
        """
        with self._lock:
            self.running -= 1
            if reader in self._readers:
                cpu_seconds = reader() - self._readers.pop(reader)
            else:
                # Taken as spread evenly over the step: a download that ran for seconds is not
                # one busy window.
                cpu_seconds *= min(1.0, WINDOW / max(wall_seconds, WINDOW))
            self._window_cpu += cpu_seconds
            self._adjust()
            if self._waiting and self.running < self.limit:
                self._waiting = False
                return True
            return False

    def _adjust(self):
        """Close the window once it is long enough: halve the limit or raise it by one."""
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed < WINDOW:
            return
        for reader, counted in self._readers.items():
            used = reader()
            self._window_cpu += used - counted
            self._readers[reader] = used
        load = self._window_cpu / elapsed
        if load > BUSY:
            self.limit = max(self.least, self.limit // 2)
        elif load < IDLE and self._held_back:
            self.limit = min(self.most, self.limit + 1)
        self._window_start, self._window_cpu, self._held_back = now, 0.0, False


def usable_cores():
    """Return how many CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class LocalSlots:
    """Local generators' running steps against a fixed number of slots.

    Local steps are CPU work: more at once than cores gain nothing, while each holds a pool
    thread that FAL steps and conversions wait for, and a large image's worth of memory. One
    pool thread is left to them, unless the pool has only one.
    """

    def __init__(self, pool_size):
        self.slots = max(1, min(pool_size - 1, usable_cores()))
        self._running = 0
        self._lock = threading.Lock()
        # At the last look, due local work waited for a slot: an ending step wakes the dispatcher.
        self.waited = False

    def free(self):
        """Return how many more local steps may start now."""
        with self._lock:
            return self.slots - self._running

    def begin(self):
        """Count a local step that is about to start."""
        with self._lock:
            self._running += 1

    def end(self):
        """Count a local step that ended; return True if due local work waits for its slot."""
        with self._lock:
            self._running -= 1
        return self.waited
