"""A job's model in another format: converted on the pool once, then served from a cache.

The cache lives beside the GLB as `results/{job_id}/.cache/{stem}.{format}[-{units}].{ext}`. Each
cache file carries its GLB's modification time, so a replaced GLB is converted again.
"""

import logging
import os
import threading
import zlib

from image2model.errors import ApiError
from image2model.files import storage
from image2model.files.downloads import StoredFile, not_completed, stored_files, visible_job
from image2model.models3d import convert
from image2model.pool import get_pool
from image2model.store import jobs

logger = logging.getLogger(__name__)

CACHE_DIR = ".cache"
# How long a request waits for its conversion; the conversion itself still completes the cache.
CONVERT_TIMEOUT = 120
LOCK_STRIPES = 64
DOWNLOAD_SUFFIXES = {"glb": ".glb", "obj": ".obj.zip", "ply": ".ply", "stl": ".stl"}


def model_download(app, conn, job_id, principal, fmt, units, file_id=None, filename=None):
    """Return the StoredFile of a job's model in fmt, converting it when the cache lacks it."""
    visible_job(conn, job_id, principal)
    generations = jobs.generations_of(conn, job_id)
    generation = _chosen(job_id, generations, file_id, filename, fmt)
    model = next(m for g, m, _ in stored_files(app, generations) if g["id"] == generation["id"])
    if model is None:
        raise ApiError(
            "NOT_FOUND",
            "The model file is no longer stored",
            {"job_id": job_id, "file_id": generation["file_id"]},
            404,
        )
    if fmt == "glb":
        return model
    extension, mime_type = convert.FORMATS[fmt]
    variant = f"{fmt}-{units}" if fmt == "stl" else fmt
    cache_path = _cache_path(app, job_id, f"{generation['result_stem']}.{variant}.{extension}")
    stem = os.path.splitext(model.download_name)[0]
    source_mtime_ns = os.stat(model.path).st_mtime_ns
    if not _fresh(cache_path, source_mtime_ns):
        with _lock(app, cache_path):
            # another request may have converted it while this one waited
            if not _fresh(cache_path, source_mtime_ns):
                _convert_on_pool(app, model.path, fmt, cache_path, units, stem, source_mtime_ns)
    download_name = stem + DOWNLOAD_SUFFIXES[fmt]
    return StoredFile(cache_path, os.path.basename(cache_path), mime_type, download_name)


def _chosen(job_id, generations, file_id, filename, fmt):
    """Return the generation to download: file_id's, else the one named `filename`, else the
    only completed one; several completed and none chosen: 409 naming them."""
    if file_id is not None:
        chosen = [g for g in generations if g["file_id"] == file_id]
        missing = {"job_id": job_id, "file_id": file_id[:255]}
    elif filename is not None:
        chosen = [g for g in generations if g["filename"] == filename]
        missing = {"job_id": job_id, "file": filename[:255]}
    else:
        chosen = [g for g in generations if g["state"] == "completed"]
        if not chosen:
            raise not_completed(job_id, generations)
        missing = None
    if not chosen:
        raise ApiError("NOT_FOUND", "No such file in this job", missing, 404)
    if len(chosen) > 1:
        raise ApiError(
            "CONFLICT",
            f"This job has {len(chosen)} models{' of that name' if filename else ''}:"
            " choose one with file_id",
            {"job_id": job_id, "files": [_choice(job_id, g, fmt) for g in chosen]},
            409,
        )
    generation = chosen[0]
    if generation["state"] != "completed":
        raise not_completed(job_id, generations, generation)
    return generation


def _choice(job_id, generation, fmt):
    """Return one file of a 409's list: its id, original name and where to download it."""
    return {
        "file_id": generation["file_id"],
        "filename": generation["filename"],
        "status": generation["state"],
        "download_url": f"/api/v1/models/download/{job_id}?file_id={generation['file_id']}"
        f"&format={fmt}",
        "model_url": jobs.download_url(job_id, generation["result_file"])
        if generation["result_file"]
        else None,
    }


def _cache_path(app, job_id, name):
    """Return the cache file's path, creating the cache folder; a folder linked out: 404."""
    job_dir = storage.job_results_dir(app, job_id)
    try:
        cache_dir = storage.inside(job_dir, CACHE_DIR)
        os.makedirs(cache_dir, exist_ok=True)
        return storage.inside(cache_dir, name)
    except storage.UnsafePath:
        logger.warning("Refusing the conversion cache of job %s: it leaves its folder", job_id)
        raise ApiError("NOT_FOUND", "No such file", {"job_id": job_id}, 404) from None


def _fresh(cache_path, source_mtime_ns):
    """Tell whether the cache file exists and was made from the GLB as it is now."""
    try:
        return os.stat(cache_path).st_mtime_ns == source_mtime_ns
    except FileNotFoundError:
        return False


def _lock(app, key):
    """Return the lock that serialises conversions of one cache file (striped, bounded)."""
    locks = app.extensions.get("image2model.conversion_locks")
    if locks is None:
        stripes = tuple(threading.Lock() for _ in range(LOCK_STRIPES))
        locks = app.extensions.setdefault("image2model.conversion_locks", stripes)
    return locks[zlib.crc32(key.encode()) % LOCK_STRIPES]


def _convert_on_pool(app, glb_path, fmt, cache_path, units, name, source_mtime_ns):
    """Convert on the worker pool, turning conversion failures into API errors."""
    pool = get_pool(app)
    if not pool.alive:
        raise ApiError("SERVICE_UNAVAILABLE", "The server is shutting down", {}, 503)
    try:
        pool.call(
            write_cache,
            glb_path,
            fmt,
            cache_path,
            units,
            name,
            source_mtime_ns,
            timeout=CONVERT_TIMEOUT,
            share_key=cache_path,
        )
    except convert.UnsupportedModelError as error:
        raise ApiError(
            "UNSUPPORTED_MODEL",
            f"The model needs glTF extensions this server cannot decode"
            f" ({', '.join(error.extensions)}): download it as GLB instead",
            {"format": fmt, "extensions": error.extensions},
            422,
        ) from None
    except convert.InvalidModelError as error:
        logger.warning("Cannot convert %s to %s: %s", glb_path, fmt, error)
        raise ApiError(
            "INVALID_MODEL",
            "The stored model cannot be converted: download it as GLB instead",
            {"format": fmt},
            422,
        ) from None
    except TimeoutError:
        raise ApiError(
            "SERVICE_UNAVAILABLE",
            "The conversion is still running: retry in a moment",
            {"format": fmt},
            503,
            headers={"Retry-After": "5"},
        ) from None


def write_cache(glb_path, fmt, cache_path, units, name, source_mtime_ns):
    """Convert the GLB into the cache file atomically: a failure leaves no file behind."""

    def write(handle):
        convert.convert_glb(glb_path, fmt, handle, units=units, name=name)
        handle.flush()
        # the cache carries its source's time: a GLB replaced later no longer matches it
        os.utime(handle.fileno(), ns=(source_mtime_ns, source_mtime_ns))

    storage.atomic_write(cache_path, write)
