"""Walking, measuring, removing and listing entries of the data folder without following links."""

import logging
import os
import shutil
import stat

from image2model import clock
from image2model.files import storage

logger = logging.getLogger(__name__)

MB = 1024 * 1024
LISTABLE = ("uploads", "results")


def child(base, name):
    """Return `base/name` for a plain name (no separator, dot name, NUL); links stay unresolved."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
        raise storage.UnsafePath(f"unsafe path component {name!r}")
    return os.path.join(base, name)


def entries(directory):
    """Return the directory's entries sorted by name (none if it does not exist)."""
    try:
        with os.scandir(directory) as scan:
            return sorted(scan, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _walk_lstat(path):
    """Yield the lstat of every entry below a directory; links are not followed."""
    for root, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                yield os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue  # removed while we walked


def measure(path):
    """Return `(bytes, files, directories)` of an entry; links count as files, never followed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0, 0, 0
    if not stat.S_ISDIR(info.st_mode):
        return (info.st_size if stat.S_ISREG(info.st_mode) else 0), 1, 0
    total, files, directories = 0, 0, 1
    for child_info in _walk_lstat(path):
        if stat.S_ISDIR(child_info.st_mode):
            directories += 1
        else:
            files += 1
            total += child_info.st_size if stat.S_ISREG(child_info.st_mode) else 0
    return total, files, directories


def directory_size(path):
    """Return `(bytes, files)` of the regular files below `path`, not following links."""
    sizes = [info.st_size for info in _walk_lstat(path) if stat.S_ISREG(info.st_mode)]
    return sum(sizes), len(sizes)


def disk_usage(app, name):
    """Return the file system's figures for a data directory plus the directory's own size."""
    path = storage.data_dir(app, name)
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


def newest_mtime(path):
    """Return the newest modification time within an entry (infinite if it has vanished)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return float("inf")
    newest = info.st_mtime
    if stat.S_ISDIR(info.st_mode):
        for child_info in _walk_lstat(path):
            newest = max(newest, child_info.st_mtime)
    return newest


class Tally:
    """What a cleanup removed (or would remove): counts, bytes, paths and errors."""

    def __init__(self, instance_path):
        self.instance_path = instance_path
        self.bytes = self.files = self.directories = 0
        self.paths = []
        self.errors = []

    def _relative(self, path):
        """Return a path relative to the data folder, as reports show it."""
        return os.path.relpath(path, self.instance_path)

    def _add(self, path, figures):
        """Count an entry's `(bytes, files, directories)` and remember its path."""
        size, files, directories = figures
        self.bytes, self.files = self.bytes + size, self.files + files
        self.directories += directories
        self.paths.append(self._relative(path))

    def count(self, path):
        """Add an entry's figures without touching it."""
        figures = measure(path)
        if figures[1] or figures[2]:
            self._add(path, figures)

    def remove(self, path):
        """Remove an entry (a directory tree, a file or a link itself) and add its figures."""
        figures = measure(path)
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            return  # removed meanwhile by another cleanup
        except OSError as error:
            logger.warning("Cannot remove %s: %s", self._relative(path), error)
            self.errors.append(f"{self._relative(path)}: {error.strerror or type(error).__name__}")
            return
        self._add(path, figures)


def _item(entry):
    """Return the listing record of one entry of a data directory."""
    info = entry.stat(follow_symlinks=False)
    is_directory = stat.S_ISDIR(info.st_mode)
    size, files = directory_size(entry.path) if is_directory else (info.st_size, None)
    if stat.S_ISLNK(info.st_mode):
        size = 0
    return {
        "path": entry.name,
        "size_mb": round(size / MB, 3),
        "size_bytes": size,
        "modified": clock.iso(info.st_mtime),
        "is_directory": is_directory,
        "is_symlink": stat.S_ISLNK(info.st_mode),
        "file_count": files,
    }


def list_files(app, directory, limit):
    """List the top entries of `uploads` or `results`, newest first, at most `limit` of them."""
    if directory not in LISTABLE:
        raise ValueError(f"not a listable directory: {directory!r}")
    base = storage.data_dir(app, directory)
    found = []
    for entry in entries(base):
        try:
            found.append((entry.stat(follow_symlinks=False).st_mtime, entry))
        except FileNotFoundError:
            continue
    found.sort(key=lambda pair: (-pair[0], pair[1].name))
    items = []
    for _mtime, entry in found[:limit]:
        try:
            items.append(_item(entry))
        except FileNotFoundError:
            continue
    total_bytes, total_files = directory_size(base)
    return {
        "directory": directory,
        "total_size_mb": round(total_bytes / MB, 3),
        "total_files": total_files,
        "total_items": len(found),
        "limit": limit,
        "truncated": len(found) > limit,
        "items": items,
    }
