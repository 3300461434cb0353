"""Processes as claim owners: this process's identity, and whether another process still runs."""

import os
import socket

import psutil

_identities = {}  # pid -> this process's identity, as it was first worked out


def worker_identity():
    """Return this process's claim owner: host, pid and process start time (pid reuse safe).

    Worked out once per process: psutil derives a start time from the boot time, which moves
    when the system clock is stepped (NTP, a resumed VM), so a second reading may differ.
    """
    pid = os.getpid()
    if pid not in _identities:
        started = psutil.Process(pid).create_time()
        _identities[pid] = f"{socket.gethostname()}:{pid}:{started:.3f}"
    return _identities[pid]


def owner_is_dead(owner):
    """Return True if a claim owner on this host no longer runs."""
    if owner == worker_identity():
        return False  # this process, even if the clock was stepped since it began
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return False  # another machine's claim expires by its lease
    try:
        return process_is_dead(int(pid_text), started)
    except ValueError:
        return True


def process_is_dead(pid, started=None):
    """Return True if no process of this host runs as `pid` (begun at `started`, if given).

    A killed process stays a zombie until its parent reaps it: after a crash its orphan waits
    for init, and in a container whose PID 1 never reaps, forever. A zombie runs nothing.
    """
    try:
        process = psutil.Process(pid)
        if started is not None and f"{process.create_time():.3f}" != started:
            return True  # the pid was reused
        return process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False  # cannot tell (a hardened /proc): a claim's lease decides
