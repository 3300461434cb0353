"""What a killed process leaves in the data folder, and removing it at the next start.

An upload is marked `uploads/.{batch}@{owner}.storing` while its files are written and recorded;
a result download writes `results/{job}/.{name}.{pid}.{hex}.part` before renaming it into place.
"""

import contextlib
import logging
import os
import re
import shutil

from image2model import processes
from image2model.files import storage

logger = logging.getLogger(__name__)

STORING = re.compile(r"\.(?P<batch_id>[\w-]+)@(?P<owner>.+)\.storing")
TEMPORARY = re.compile(r"\..+\.(\d+)\.[0-9a-f]+\.part")


@contextlib.contextmanager
def storing_mark(app, batch_id):
    """Mark a batch as being stored by this process while the block runs."""
    mark = os.path.join(
        storage.data_dir(app, "uploads"), f".{batch_id}@{processes.worker_identity()}.storing"
    )
    with open(mark, "xb"):
        pass
    try:
        yield
    finally:
        os.remove(mark)


def remove_interrupted_writes(app, conn):
    """Remove what dead processes were writing: uploads never recorded, half downloads."""
    remove_interrupted_batches(app, conn)
    remove_dead_temporaries(app, processes.process_is_dead)


def remove_interrupted_batches(app, conn):
    """Remove the files of batches whose writer died before recording them; return their ids.

    Only a batch marked by a dead process goes (another live process may be storing one now);
    a batch recorded before its writer died keeps its files and loses only the mark.
    """
    removed = []
    uploads_dir = storage.data_dir(app, "uploads")
    with os.scandir(uploads_dir) as found:
        marks = [entry for entry in found if STORING.fullmatch(entry.name)]
    for mark in marks:
        match = STORING.fullmatch(mark.name)
        if not processes.owner_is_dead(match["owner"]):
            continue
        batch_id = match["batch_id"]
        recorded = conn.execute("SELECT 1 FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if recorded is None:
            shutil.rmtree(storage.batch_upload_dir(app, batch_id), ignore_errors=True)
            removed.append(batch_id)
        with contextlib.suppress(FileNotFoundError):
            os.remove(mark.path)
    if removed:
        logger.warning("Removed %d uploads cut off before they were recorded", len(removed))
    return removed


def remove_dead_temporaries(app, writer_is_dead):
    """Remove the temporary files of writes to `results/` whose writer died (`writer_is_dead(pid)`).

    A process killed while it downloads a result leaves its temporary sibling behind; the
    generation downloads again under another name. Returns the paths removed.
    """
    removed = []
    with os.scandir(storage.data_dir(app, "results")) as folders:
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
