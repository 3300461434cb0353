"""Logging: the log files and their routing (setup), secrets kept out of them (redaction), the
thread that writes them (writer), and the admin endpoints' work: statistics and rotation (files),
analysis, export.

May import: files, store, pool, errors, clock.
"""
