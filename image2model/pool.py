"""The in-process worker pool: a ThreadPoolExecutor created per app, after gunicorn forks."""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)


class WorkerPool:
    """Runs jobs on threads (or inline when size is 0, for deterministic unit tests)."""

    def __init__(self, size):
        self.size = int(size)
        self._executor = (
            ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="image2model-pool")
            if self.size > 0
            else None
        )
        self.stopping = threading.Event()
        self._shared = {}
        self._shared_lock = threading.Lock()

    @property
    def alive(self):
        """Whether the pool still accepts work."""
        return not self.stopping.is_set()

    @property
    def threads(self):
        """Return how many worker threads exist now."""
        return len(self._executor._threads) if self._executor else 0

    @property
    def queue_depth(self):
        """Return how many submitted calls have not started yet."""
        return self._executor._work_queue.qsize() if self._executor else 0

    def submit(self, fn, *args, **kwargs):
        """Run `fn` on the pool; a failure is logged here, never lost in a thread."""
        if not self.alive:
            raise RuntimeError("the worker pool is shutting down")
        if self._executor is None:
            return self._run(fn, args, kwargs)
        try:
            return self._executor.submit(self._run, fn, args, kwargs)
        except RuntimeError:
            # The executor was shut down without us (the interpreter exits): so is the pool.
            self.stopping.set()
            raise

    def call(self, fn, *args, timeout=None, share_key=None, **kwargs):
        """Run `fn` on the pool and wait for its result; its exception is raised here.

        Calls with the same `share_key` while one is running wait on that one instead of
        starting another (a caller that timed out leaves it running for the next).
        """
        if not self.alive:
            raise RuntimeError("the worker pool is shutting down")
        if self._executor is None:
            return fn(*args, **kwargs)
        with self._shared_lock:
            future = self._shared.get(share_key) if share_key is not None else None
            if future is None:
                future = self._executor.submit(fn, *args, **kwargs)
                if share_key is not None:
                    self._shared[share_key] = future
                    future.add_done_callback(lambda _done: self._forget(share_key, future))
        return future.result(timeout=timeout)

    def _forget(self, share_key, future):
        """Drop a finished shared call."""
        with self._shared_lock:
            if self._shared.get(share_key) is future:
                del self._shared[share_key]

    def _run(self, fn, args, kwargs):
        """Call `fn`, logging any exception, and count it finished."""
        try:
            return fn(*args, **kwargs)
        except Exception:
            logger.exception("Pool task %s failed", getattr(fn, "__name__", fn))
            return None

    def shutdown(self, wait=True):
        """Stop accepting work, drop queued calls and wait for running ones."""
        self.stopping.set()
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)


def init_app(app):
    """Create the app's pool; gunicorn loads the app in the worker, so this runs after fork."""
    app.extensions["image2model.pool"] = WorkerPool(app.config["POOL_SIZE"])


def get_pool(app):
    """Return the app's worker pool."""
    return app.extensions["image2model.pool"]
