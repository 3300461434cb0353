"""How many steps run at once: a fixed number of places for FAL steps, and one for local CPU work.

FAL steps mostly wait on the network; one pool thread is always left to conversions and log
exports. Local steps are CPU work: more at once than cores gain nothing, while each holds a pool
thread and a large image's worth of memory.
"""

import os
import threading


class Slots:
    """A fixed number of places for running steps of one kind."""

    def __init__(self, count):
        self.count = max(1, int(count))
        self.running = 0
        # A step found no place since the last one ended: an ending step wakes the dispatcher.
        self.waited = False
        self._lock = threading.Lock()

    def free(self):
        """Return how many more steps may begin now."""
        with self._lock:
            return self.count - self.running

    def try_begin(self):
        """Count a step as running if a place is free; return whether it may begin."""
        with self._lock:
            if self.running < self.count:
                self.running += 1
                return True
            self.waited = True
            return False

    def begin(self):
        """Count a step that the dispatcher saw a free place for."""
        with self._lock:
            self.running += 1

    def end(self):
        """Count a step that ended; return True if a step waited for its place."""
        with self._lock:
            self.running -= 1
            waited, self.waited = self.waited, False
            return waited


def usable_cores():
    """Return how many CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fal_slots(pool_size):
    """Return the places of FAL steps: every pool thread but one."""
    return Slots(max(1, pool_size - 1))


def local_slots(pool_size):
    """Return the places of local steps: the cores, leaving the pool a thread."""
    return Slots(max(1, min(pool_size - 1, usable_cores())))
