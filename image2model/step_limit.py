"""How many FAL steps run at once: more while they wait on FAL, fewer while they load the GIL."""

import threading
import time

WINDOW = 0.05  # seconds of finished steps one adjustment looks at
BUSY = 0.8  # steps' CPU per second of wall time above which the GIL counts as saturated
IDLE = 0.5  # below it, with work held back, there is room for one more step


class StepLimit:
    """Running steps against a limit, halved while their CPU saturates the GIL, raised while not."""

    # The steps' own CPU (thread time) is measured, not their wall time: waiting for the GIL
    # lengthens a step as waiting for FAL does, and would read as room for more. More threads
    # than the GIL can serve only take turns at it, and each turn costs a switch.

    def __init__(self, most, least=3, clock=time.monotonic):
        self.most = max(1, int(most))
        self.least = min(least, self.most)
        self.limit = self.most
        self.running = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._window_cpu = 0.0
        self._held_back = False  # in this window, for the next adjustment
        self._waiting = False  # since the last free slot was announced

    def try_start(self):
        """Count a step as running if the limit allows; return whether it may start."""
        with self._lock:
            if self.running < self.limit:
                self.running += 1
                return True
            self._held_back = self._waiting = True
            return False

    def finished(self, cpu_seconds, wall_seconds):
        """Count a step done after `cpu_seconds` of CPU; say whether a held-back one may start."""
        with self._lock:
            self.running -= 1
            now = self._clock()
            elapsed = now - self._window_start
            # A step longer than a window counts one window's share of its CPU, taken as spread
            # evenly over its run: a download that ran for seconds is not one busy window.
            self._window_cpu += cpu_seconds * min(1.0, WINDOW / max(wall_seconds, 1e-9))
            if elapsed >= WINDOW:
                load = self._window_cpu / elapsed
                if load > BUSY:
                    self.limit = max(self.least, self.limit // 2)
                elif load < IDLE and self._held_back:
                    self.limit = min(self.most, self.limit + 1)
                self._window_start, self._window_cpu, self._held_back = now, 0.0, False
            if self._waiting and self.running < self.limit:
                self._waiting = False
                return True
            return False
