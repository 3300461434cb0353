"""Generations this process keeps claimed between steps, and when each runs next."""

import heapq
import threading


class HeldSteps:
    """A thread-safe timetable of claimed generations waiting for their next step."""

    def __init__(self):
        self._lock = threading.Lock()
        self._heap = []

    def __len__(self):
        with self._lock:
            return len(self._heap)

    def add(self, due_at, generation_id):
        """Schedule a generation; return True if it is now the first one due."""
        with self._lock:
            heapq.heappush(self._heap, (due_at, generation_id))
            return self._heap[0][1] == generation_id

    def pop_next_due(self, now):
        """Remove and return the earliest `(due_at, generation_id)` due by `now`, or None."""
        with self._lock:
            if self._heap and self._heap[0][0] <= now:
                return heapq.heappop(self._heap)
            return None

    def due_times(self):
        """Return when each held generation runs next, by generation id."""
        with self._lock:
            return {generation_id: due_at for due_at, generation_id in self._heap}

    def next_due_at(self):
        """Return when the first held generation is due, or None when none is held."""
        with self._lock:
            return self._heap[0][0] if self._heap else None

    def clear(self):
        """Forget every held generation (their claims are released elsewhere)."""
        with self._lock:
            self._heap.clear()
