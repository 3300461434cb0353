"""The data folder: every path is resolved here and checked to stay inside the instance folder."""

import contextlib
import logging
import os
import re
import shutil

logger = logging.getLogger(__name__)

DATA_DIRS = ("uploads", "results", "logs")
# atomic_write's temporary sibling: `.{name}.{pid of the writer}.{hex}.part`.
TEMPORARY = re.compile(r"\..+\.(\d+)\.[0-9a-f]+\.part")
# A preview is named apart from its model and from the upload it was made from (`chair.png`).
PREVIEW_SUFFIX = ".preview"


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


class UnsafePath(ValueError):
    """A name that would leave its directory (traversal, absolute, NUL, link out)."""


def inside(base, *parts):
    """Join `parts` under `base` and return the real path, refusing anything that leaves `base`."""
    for part in parts:
        if not part or "\x00" in part or "/" in part or "\\" in part or part in (".", ".."):
            raise UnsafePath(f"unsafe path component {part!r}")
    base_real = os.path.realpath(base)
    candidate = os.path.realpath(os.path.join(base_real, *parts))
    if os.path.commonpath([base_real, candidate]) != base_real or candidate == base_real:
        raise UnsafePath("path leaves its directory")
    return candidate


def preview_name(stem, extension):
    """Return the stored name of a result's preview image (`chair.preview.webp`)."""
    return f"{stem}{PREVIEW_SUFFIX}{extension}"


def job_results_dir(app, job_id, create=False):
    """Return the directory of a job's results (`results/{job_id}`)."""
    path = inside(data_dir(app, "results"), job_id)
    if create:
        os.makedirs(path, exist_ok=True)
    return path


def batch_upload_dir(app, batch_id, create=False):
    """Return the directory of a batch's uploaded files (`uploads/{batch_id}`)."""
    path = inside(data_dir(app, "uploads"), batch_id)
    if create:
        os.makedirs(path, exist_ok=True)
    return path


def atomic_write(path, write):
    """Write a file by calling `write(file)` on a temporary sibling, then rename it into place."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.{id(write):x}.part")
    try:
        with open(temporary, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    return path


def atomic_write_bytes(path, data):
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda handle: handle.write(data))


def remove_dead_temporaries(app, writer_is_dead):
    """Remove the temporary files of writes to `results/` whose writer died (`writer_is_dead(pid)`).

    A process killed while it downloads a result leaves its temporary sibling behind; the
    generation downloads again under another name. Returns the paths removed.
    """
    removed = []
    with os.scandir(data_dir(app, "results")) as folders:
        job_dirs = [entry.path for entry in folders if entry.is_dir(follow_symlinks=False)]
    for directory in job_dirs:
        try:
            with os.scandir(directory) as found:
                names = [entry.name for entry in found if entry.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            continue  # removed meanwhile (a job deleted)
        for name in names:
            match = TEMPORARY.fullmatch(name)
            if match and writer_is_dead(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(directory, name))
                    removed.append(os.path.join(directory, name))
    if removed:
        logger.warning("Removed %d files left half written by a stopped process", len(removed))
    return removed
