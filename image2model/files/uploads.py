"""Uploaded images: checked by content, stored atomically, recorded with their job."""

import logging
import os
import shutil
import time
import unicodedata
import warnings

from PIL import Image, UnidentifiedImageError

from image2model.errors import ApiError
from image2model.files import leftovers, storage
from image2model.store import db, jobs
from image2model.store.jobs import visible_to

logger = logging.getLogger(__name__)

# Phone cameras write JPEGs with extra embedded images, which Pillow names MPO.
FORMATS = {
    "JPEG": ("jpg", "image/jpeg"),
    "MPO": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
}


def _size_of(stream):
    """Return the stream's length in bytes, leaving it at the start."""
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


def inspect(upload, max_size, max_pixels):
    """Return `(problem, facts)` for one uploaded file; problem is None when it is acceptable."""
    size = _size_of(upload.stream)
    if size == 0:
        return "empty file", None
    if size > max_size:
        return "too_large", {"size": size}
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its two bomb limits; here that is a refusal too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(upload.stream)
        with image:
            if image.format not in FORMATS:
                return f"not a JPEG or PNG image (found {image.format})", None
            width, height = image.size
            if width < 1 or height < 1 or width * height > max_pixels:
                return f"image is {width}x{height}: at most {max_pixels} pixels allowed", None
            if image.format in ("JPEG", "MPO"):
                # Decoding at 1/8 scale still reads every byte of the stream (so truncation is
                # caught) but holds 64 times fewer pixels in memory.
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()  # a full decode catches truncated and corrupt files
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"image has more than {max_pixels} pixels", None
    except UnidentifiedImageError:
        return "not a decodable JPEG or PNG image", None
    except (OSError, SyntaxError, ValueError) as error:
        return f"image data is corrupt or truncated ({type(error).__name__})", None
    finally:
        upload.stream.seek(0)
    extension, content_type = FORMATS[image.format]
    return None, {
        "size": size,
        "width": width,
        "height": height,
        "extension": extension,
        "content_type": content_type,
    }


def labels(uploads):
    """Return a name per uploaded file for error details, unique even when names repeat."""
    names = [upload.filename or f"file #{index + 1}" for index, upload in enumerate(uploads)]
    return [
        # Several files may share a name (phones call every photo image.jpg).
        f"{name} (#{index + 1})" if names.count(name) > 1 else name
        for index, name in enumerate(names)
    ]


def check_all(uploads, config):
    """Inspect every file; raise 413 or 400 naming each bad file, else return their facts."""
    if not uploads:
        raise ApiError(
            "VALIDATION_ERROR",
            "No files were sent: use the multipart field 'files'",
            {"field": "files"},
        )
    if len(uploads) > config["MAX_FILES"]:
        raise ApiError(
            "VALIDATION_ERROR",
            f"At most {config['MAX_FILES']} files per upload",
            {"total_files": len(uploads), "max_files": config["MAX_FILES"]},
        )
    too_large, problems, facts = {}, {}, []
    for label, upload in zip(labels(uploads), uploads, strict=True):
        problem, file_facts = inspect(upload, config["MAX_FILE_SIZE"], config["MAX_IMAGE_PIXELS"])
        if problem == "too_large":
            too_large[label] = file_facts["size"]
        elif problem:
            problems[label] = problem
        facts.append(file_facts)
    if too_large:
        raise ApiError(
            "FILE_TOO_LARGE",
            f"Files may be at most {config['MAX_FILE_SIZE']} bytes",
            {"files": too_large, "max_file_size": config["MAX_FILE_SIZE"]},
            status=413,
        )
    if problems:
        raise ApiError(
            "VALIDATION_ERROR",
            "Some files are not acceptable images",
            {"files": problems, "allowed_formats": ["jpg", "jpeg", "png"]},
        )
    return facts


def check_for_generator(generator, sources, options):
    """Raise 400 naming each image the chosen generator cannot use: `sources` maps label -> file."""
    if generator.check_images is not None:
        generator.check_images(sources, options)


def visible_in_a_name(character):
    """Return False for characters a file name must not keep: controls, line and paragraph
    separators, and format characters other than the joiners some scripts spell with."""
    # They would reach responses, logs and download names, where they break lines or disguise
    # the name (a right-to-left override).
    if character in "\u200c\u200d":  # zero-width non-joiner and joiner: Persian, emoji
        return True
    return unicodedata.category(character) not in ("Cc", "Cf", "Zl", "Zp")


def original_name(upload, index):
    """Return the client's file name without any directory part or invisible characters."""
    name = os.path.basename((upload.filename or "").replace("\\", "/"))
    name = "".join(c for c in name if visible_in_a_name(c)).strip()
    return name[:255] or f"image-{index + 1}"


def store_batch(app, principal, uploads, facts, model_type, options):
    """Write the files and record batch, files, job and generations together; all or nothing.

    A mark names the batch and this process while it is stored: a crash (kill -9) between the
    first file and the commit leaves files no row owns, which the next start removes.
    """
    batch_id = jobs.new_batch_id()
    with leftovers.storing_mark(app, batch_id):
        return batch_id, *_store(app, principal, uploads, facts, model_type, options, batch_id)


def _store(app, principal, uploads, facts, model_type, options, batch_id):
    """Write a batch's files and record it; return `(job_id, task_id, file_rows)`."""
    directory = storage.batch_upload_dir(app, batch_id, create=True)
    file_rows = []
    try:
        for index, (upload, file_facts) in enumerate(zip(uploads, facts, strict=True)):
            file_id = jobs.new_id("file")
            stored_name = f"{file_id}.{file_facts['extension']}"
            storage.atomic_write(
                os.path.join(directory, stored_name),
                lambda handle, u=upload: shutil.copyfileobj(u.stream, handle),
            )
            file_rows.append(
                {
                    "file_id": file_id,
                    "filename": original_name(upload, index),
                    "stored_path": os.path.join("uploads", batch_id, stored_name),
                    **file_facts,
                }
            )
        conn = db.get_db()
        with db.transaction(conn):
            now = time.time()
            conn.execute(
                "INSERT INTO batches (batch_id, owner, created_at) VALUES (?, ?, ?)",
                (batch_id, principal.owner, now),
            )
            for row in file_rows:
                conn.execute(
                    "INSERT INTO files (file_id, batch_id, owner, filename, stored_path,"
                    " content_type, size, width, height, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row["file_id"],
                        batch_id,
                        principal.owner,
                        row["filename"],
                        row["stored_path"],
                        row["content_type"],
                        row["size"],
                        row["width"],
                        row["height"],
                        now,
                    ),
                )
            job_id, task_id = jobs.insert_job(
                conn,
                principal.owner,
                model_type,
                options,
                file_rows,
                batch_id,
                app.config["JOB_TIMEOUT"],
            )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return job_id, task_id, file_rows


def find_file(conn, file_id, principal):
    """Return a file row the principal may see and that a live (not deleted) job still uses."""
    row = conn.execute(
        "SELECT * FROM files f WHERE file_id = ? AND EXISTS (SELECT 1 FROM generations g"
        " JOIN jobs j USING (job_id) WHERE g.file_id = f.file_id AND j.deleted_at IS NULL)",
        (file_id,),
    ).fetchone()
    return row if visible_to(row, principal) else None


def latest_generation(conn, file_id):
    """Return the newest generation of a file in a live job, or None."""
    return conn.execute(
        "SELECT g.state, g.progress, g.job_id FROM generations g JOIN jobs j USING (job_id)"
        " WHERE g.file_id = ? AND j.deleted_at IS NULL ORDER BY g.id DESC LIMIT 1",
        (file_id,),
    ).fetchone()


def batch_files(conn, batch_id, principal):
    """Return `(batch, generations of its upload job)`, or None if hidden or its job deleted."""
    batch = conn.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
    if not visible_to(batch, principal):
        return None
    job = conn.execute(
        "SELECT job_id FROM jobs WHERE batch_id = ? AND deleted_at IS NULL"
        " ORDER BY created_at LIMIT 1",
        (batch_id,),
    ).fetchone()
    if job is None:
        return None
    return batch, jobs.generations_of(conn, job["job_id"])


def generate_from_file(app, conn, principal, file_id, generator, options):
    """Start a one-file job over an earlier upload; return `(job_id, task_id)`. 404 if unseen."""
    file_row = find_file(conn, file_id, principal)
    if file_row is None:
        raise ApiError("NOT_FOUND", "No such file", {"file_id": file_id}, status=404)
    image_path = os.path.join(app.instance_path, file_row["stored_path"])
    check_for_generator(generator, {file_row["filename"]: image_path}, options)
    with db.transaction(conn):
        # Again inside the transaction: a cleanup may have retired the file meanwhile.
        if find_file(conn, file_id, principal) is None:
            raise ApiError("NOT_FOUND", "No such file", {"file_id": file_id}, status=404)
        return jobs.insert_job(
            conn,
            principal.owner,
            generator.name,
            options,
            [file_row],
            None,
            app.config["JOB_TIMEOUT"],
        )
