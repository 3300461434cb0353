"""How records reach the log files off the request threads: the records queue on the root
logger, the writer thread that empties it a batch at a time, and the size-rotated files. It
imports nothing of the app: `logs` sets it up and makes the access records."""

import contextlib
import logging
import logging.handlers
import os
import queue
import stat
import threading
from typing import NamedTuple

# How long the log writer lets records gather before it writes them; the longest wait for it
# to catch up or to end.
GATHER_SECONDS = 0.05
FLUSH_TIMEOUT = 5.0


class LogFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated file written many records at a time with one flush, that reopens its path
    if the file was moved away under it."""

    _size = 0  # bytes in the file: as last seen on disk, plus what this handler wrote since
    _regular = True  # only a regular file is rotated (not /dev/null)

    def _open(self):
        stream = super()._open()
        self._note(os.fstat(stream.fileno()))
        return stream

    def _note(self, info):
        self._size, self._regular = info.st_size, stat.S_ISREG(info.st_mode)

    def emit(self, record):
        self.write([record])

    def handle_all(self, records):
        """Write those of `records` this handler takes (its level, its filters)."""
        taken = [r for r in records if r.levelno >= self.level and self.filter(r)]
        if taken:
            with self.lock:
                self.write(taken)

    def write(self, records):
        """Write records, rotating by size, then flush; the caller holds the lock."""
        if self._closed:
            return  # a thread still holding a replaced handler must not reopen the file
        if not self.writes_to_its_path():
            self.stream.close()
            self.stream = None
        for record in records:
            try:
                # Formatted once: the stock rotation check formats a record to measure it.
                line = self.format(record) + self.terminator
                size = len(line) if line.isascii() else len(line.encode(self.encoding))
                if self.stream is None:
                    self.stream = self._open()
                if self._regular and self._size and self._size + size >= self.maxBytes > 0:
                    self.doRollover()
                self.stream.write(line)
                self._size += size
            except Exception:
                self.handleError(record)
        self.flush()

    def writes_to_its_path(self):
        """Tell whether the open file (if any) is still the one at the handler's path."""
        stream = self.stream
        if stream is None:
            return True  # opened at the next record
        try:
            on_disk = os.stat(self.baseFilename)
        except FileNotFoundError:
            return False
        current = os.fstat(stream.fileno())
        if (on_disk.st_dev, on_disk.st_ino) != (current.st_dev, current.st_ino):
            return False
        self._note(on_disk)  # another process may write to it too (a CLI command)
        return True


class RecordQueue(logging.handlers.QueueHandler):
    """On the root logger: hands every record to the log files' writer, through its queue while
    its thread runs, else at once."""

    def __init__(self, writer):
        super().__init__(writer.queue)
        self.writer = writer

    def handle(self, record):
        # No lock: emit() only copies the record and queues it (or hands it to locked files).
        if self.filter(record):
            self.emit(record)
        return True

    def prepare(self, record):
        """Return a copy with its message and traceback as text, for another thread: arguments
        may change meanwhile, a traceback holds frames. Redaction happens there, on all of it."""
        prepared = object.__new__(type(record))  # a shallow copy (copy.copy costs 3 times more)
        prepared.__dict__.update(record.__dict__)
        try:
            prepared.msg = record.getMessage()
        except Exception:  # a bad format string must not break the caller
            prepared.msg = f"{record.msg!s} {record.args!r}"
        prepared.args = None
        if record.exc_info and not record.exc_text:
            prepared.exc_text = _TRACEBACKS.formatException(record.exc_info)
        prepared.exc_info = None
        return prepared

    def emit(self, record):
        try:
            writer = self.writer
            # A record made on the writer thread (an access record) no other thread holds.
            writer.take(record if writer.on_its_thread() else self.prepare(record))
        except Exception:
            self.handleError(record)


_TRACEBACKS = logging.Formatter()
_STOP = object()


class AccessEntry(NamedTuple):
    """What a request thread hands the writer about its request: the writer makes the access
    record (if `logged`) and gives the entry to the app's request observers (its metrics)."""

    created: float
    thread: int
    thread_name: str
    args: tuple
    fields: dict
    logged: bool
    observers: tuple


class LogWriter:
    """The thread that writes queued records to the files, and makes the access records.

    Woken by a record, it lets more gather for GATHER_SECONDS and writes them all at once, and
    while records keep coming it only wakes every GATHER_SECONDS: a request thread hands Python's
    GIL over each time it wakes the writer, and the writer takes it back after each write to a
    file. Work done here, a batch at a time, costs a fraction of the same on a request thread.
    """

    def __init__(self, handlers, take_entry):
        self.handlers = handlers
        self.take_entry = take_entry  # makes and logs the access record of an AccessEntry
        self.queue = queue.SimpleQueue()
        self.running = False
        self._hurry = threading.Event()  # a flush or stop is waiting: no gathering
        self._thread = None
        self._made = []  # the records made on this thread, to write with the batch

    def start(self):
        """Start the thread; records are queued from now on."""
        self.running = True
        self._thread = threading.Thread(target=self._run, name="image2model-logs", daemon=True)
        self._thread.start()

    def on_its_thread(self):
        """Tell whether the caller is the writer thread."""
        return self._thread is threading.current_thread()

    def take(self, record):
        """Take a prepared record: queued, kept for the batch (on this thread) or written."""
        if self.on_its_thread():
            self._made.append(record)
        elif self.running:
            self.queue.put(record)
        else:
            self.write([record])

    def write(self, records):
        """Write records to every file that takes them."""
        for handler in self.handlers:
            try:
                handler.handle_all(records)
            except Exception:  # one failing file must not end the thread or skip the others
                handler.handleError(records[0])

    def _run(self):
        stopping, waiting = False, True
        while not stopping:
            items = [self.queue.get()] if waiting else []
            self._hurry.wait(GATHER_SECONDS)
            self._hurry.clear()
            with contextlib.suppress(queue.Empty):
                while True:
                    items.append(self.queue.get_nowait())
            waiting = not items  # a quiet spell: sleep until the next record
            stopping = self._handle(items)

    def _handle(self, items):
        """Write the records and access entries among `items`, then wake the flushes waiting
        for them; return True if the writer must stop."""
        stopping, flushes = False, []
        for item in items:
            if isinstance(item, AccessEntry):
                self.take_entry(item)  # its record comes back here by take()
            elif isinstance(item, logging.LogRecord):
                self._made.append(item)
            elif item is _STOP:
                stopping = True
            else:
                flushes.append(item)
        records, self._made = self._made, []
        if records:
            self.write(records)
        for written in flushes:
            written.set()
        return stopping

    def flush(self, timeout):
        """Wait until the records queued so far are written; False if it took over `timeout`."""
        if not self.running:
            return True
        written = threading.Event()
        self.queue.put(written)
        self._hurry.set()
        return written.wait(timeout)

    def stop(self, timeout=FLUSH_TIMEOUT):
        """Write what is queued and end the thread; later records are written as they come."""
        if not self.running:
            return
        self.running = False
        self.queue.put(_STOP)
        self._hurry.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return  # stuck writing to a file: what it holds goes with it
        # What a thread queued while it still saw the writer running.
        items = []
        with contextlib.suppress(queue.Empty):
            while True:
                items.append(self.queue.get_nowait())
        self._handle(items)
