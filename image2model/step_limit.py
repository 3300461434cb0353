"""How many generation steps may run at once: as many as the pool has threads while they wait
on the network, fewer while the process is busy on the CPU, where more Python threads only take
turns at the GIL and each turn costs a switch."""

import threading
import time

WINDOW = 0.02  # seconds of process CPU use that one adjustment looks at
BUSY = 0.9  # share of one core above which the process counts as CPU-bound
IDLE = 0.6  # share below which there is room for one more step


class StepLimit:
    """Running steps against a limit, halved while CPU-bound and raised by one while not."""

    def __init__(self, most, least=3, clock=time.monotonic, cpu_clock=time.process_time):
        self.most = max(1, most)
        self.least = min(least, self.most)
        self.limit = self.most
        self.running = 0
        self._waiting = False  # work was held back: the next free slot must say so
        self._clock, self._cpu_clock = clock, cpu_clock
        self._lock = threading.Lock()
        self._window_start, self._cpu_start = clock(), cpu_clock()

    def take(self, wanted):
        """Count up to `wanted` steps as running; return how many may start."""
        with self._lock:
            granted = max(0, min(wanted, self.limit - self.running))
            self.running += granted
            if granted < wanted:
                self._waiting = True
            return granted

    def untake(self, count):
        """Give back slots that were taken but not used."""
        with self._lock:
            self.running -= count

    def finished(self):
        """Count one step as done and adjust the limit to the CPU use of the last window;
        return True if work held back may start now."""
        with self._lock:
            self.running -= 1
            now, cpu = self._clock(), self._cpu_clock()
            elapsed = now - self._window_start
            if elapsed >= WINDOW:
                busy = (cpu - self._cpu_start) / elapsed
                if busy > BUSY:
                    self.limit = max(self.least, self.limit // 2)
                elif busy < IDLE:
                    self.limit = min(self.most, self.limit + 1)
                self._window_start, self._cpu_start = now, cpu
            if self._waiting and self.running < self.limit:
                self._waiting = False
                return True
            return False
