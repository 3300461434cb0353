"""The data folder: every path is resolved here and checked to stay inside the instance folder."""

import contextlib
import logging
import os

logger = logging.getLogger(__name__)

DATA_DIRS = ("uploads", "results", "logs")
# A preview is named apart from its model and from the upload it was made from (`chair.png`).
PREVIEW_SUFFIX = ".preview"


def data_dir(app, name):
    """Return (creating it if needed) one of the data folder's directories."""
    if name not in DATA_DIRS:
        raise ValueError(f"unknown data directory {name!r}")
    path = os.path.join(app.instance_path, name)
    os.makedirs(path, exist_ok=True)
    return path


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
