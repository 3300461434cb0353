"""The data folder: every path is resolved here and checked to stay inside the instance folder."""

import os
import shutil

DATA_DIRS = ("uploads", "results", "logs")


def data_dir(app, name):
    """Return (creating it if needed) one of the data folder's directories."""
    if name not in DATA_DIRS:
        raise ValueError(f"unknown data directory {name!r}")
    path = os.path.join(app.instance_path, name)
    os.makedirs(path, exist_ok=True)
    return path


def directory_size(path):
    """Return `(bytes, files)` of the regular files below `path`, not following links."""
    total_bytes = 0
    file_count = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                stat = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue  # removed while we walked
            if not os.path.islink(os.path.join(root, name)):
                total_bytes += stat.st_size
                file_count += 1
    return total_bytes, file_count


def disk_usage(app, name):
    """Return the file system's figures for a data directory plus the directory's own size."""
    path = data_dir(app, name)
    usage = shutil.disk_usage(path)
    own_bytes, file_count = directory_size(path)
    gib = 1024**3
    return {
        "total_gb": round(usage.total / gib, 3),
        "used_gb": round(usage.used / gib, 3),
        "free_gb": round(usage.free / gib, 3),
        "usage_percent": round(usage.used / usage.total * 100, 2) if usage.total else 0.0,
        "directory_size_mb": round(own_bytes / (1024 * 1024), 3),
        "file_count": file_count,
    }
