"""Job state in SQLite: connections and migrations (db), jobs and their state machine (jobs), the
change notifier that wakes event streams and the dispatcher (events).

The bottom of the domain: imports nothing of image2model but itself.
"""
