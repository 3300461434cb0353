"""Configuration defaults and the normalisation applied after every layer is loaded."""

import os

VERSION = "1.0.0"

DEFAULTS = {
    "API_KEYS": [],
    "ADMIN_API_KEY": None,
    "FAL_KEY": None,
    "DEFAULT_MODEL": None,
    "RATELIMIT_DEFAULT": "60 per minute;1000 per hour",
    "RATELIMIT_STORAGE_URI": "memory://",
    "RATELIMIT_HEADERS_ENABLED": True,
    "PROXY_HOPS": 1,
    "FAL_POLL_INTERVAL": 1.0,
    "MAX_FILES": 25,
    "MAX_FILE_SIZE": 10 * 1024 * 1024,
    "POOL_SIZE": 8,
    "MAX_IMAGE_PIXELS": 40_000_000,
    "JOB_TIMEOUT": 1800,
    "MAX_FAL_IN_FLIGHT": 100,
    "FAL_UPLOAD": "storage",
    "FAL_STORAGE_URL": None,
    "FAL_MAX_ATTEMPTS": 5,
    "FAL_RETRY_BASE": 1.0,
    "SSE_HEARTBEAT": 15,
    "SSE_MAX_STREAMS_PER_KEY": 8,
    "SSE_MAX_STREAMS": 48,
    "DISK_MIN_FREE_MB": 500,
    "DATABASE_NAME": "image2model.sqlite3",
    "LOG_LEVEL": "INFO",
    "LOG_MAX_BYTES": 10 * 1024 * 1024,
    "LOG_BACKUP_COUNT": 5,
    "LOG_THREAD": None,
    "RETENTION_HOURS": 72,
    "FAL_STORE_IO": True,
    "RETENTION_INTERVAL": 3600,
    "DISK_WARNING_PERCENT": 80,
    "DISK_CRITICAL_PERCENT": 90,
}


def finalize(config):
    """Normalise values that may arrive as JSON scalars, strings or lists."""
    config["API_KEYS"] = _key_list(config.get("API_KEYS"))
    admin_key = config.get("ADMIN_API_KEY")
    config["ADMIN_API_KEY"] = str(admin_key).strip() if admin_key not in (None, "") else None
    if not config.get("FAL_KEY"):
        config["FAL_KEY"] = os.environ.get("FAL_KEY") or None
    # Room for the multipart framing around MAX_FILES full-size files. Flask's own defaults hold
    # MAX_CONTENT_LENGTH = None (no limit), so a plain setdefault would never set it.
    if config.get("MAX_CONTENT_LENGTH") is None:
        files_bytes = int(config["MAX_FILES"]) * int(config["MAX_FILE_SIZE"])
        config["MAX_CONTENT_LENGTH"] = files_bytes + 1024 * 1024


def _key_list(value):
    """Turn a comma-separated string, a number or a list into a list of key strings."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]
