"""What the store holds for a job, for admins: rows, states, timings and files on disk.

Only values of the job's own rows and relative file names leave here: never a key, the FAL key,
an absolute path or the database's location.
"""

import json
import logging
import os
import stat

from image2model import clock
from image2model.files import storage
from image2model.files.downloads import checked_name
from image2model.store import jobs

logger = logging.getLogger(__name__)

GENERATION_TIMES = {
    "created": "created_at",
    "submitted": "submitted_at",
    "started": "started_at",
    "downloading": "downloading_at",
    "finished": "finished_at",
    "updated": "updated_at",
    "next_run": "next_run_at",
    "deadline": "deadline_at",
    "lease_until": "lease_until",
}


def iso(epoch):
    """Return an epoch time as ISO 8601 UTC with microseconds, or None."""
    return None if epoch is None else clock.iso(epoch, "microseconds")


def job_report(app, conn, job_id):
    """Return the debug body of a job, deleted ones included; `found` is False if unknown."""
    job = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if job is None:
        # an id that could never name a results folder is refused rather than reported missing
        checked_name(app, job_id, "job_id")
        return {"job_id": job_id, "found": False, "files": [], "metadata": None}
    generations = jobs.generations_of(conn, job_id)
    figures = jobs.summary(generations)
    # A held poll's next run is timed in this process's memory, not in its row.
    dispatcher = app.extensions.get("image2model.dispatcher")
    held = dispatcher.held.due_times() if dispatcher is not None else {}
    return {
        "job_id": job_id,
        "found": True,
        "files": files_on_disk(app, job_id),
        "metadata": {
            "created": iso(job["created_at"]),
            "status": figures["status"],
            "progress": figures["progress"],
            "model_type": job["model_type"],
            "owner": job["owner"],
            "task_id": job["task_id"],
            "batch_id": job["batch_id"],
            "options": json.loads(job["options"]),
            "deleted": iso(job["deleted_at"]),
            "total_files": figures["total_files"],
            "completed_files": figures["completed_files"],
            "failed_files": figures["failed_files"],
            "generations": [_generation(g, held.get(g["id"])) for g in generations],
        },
    }


def _generation(generation, held_until=None):
    """Return one generation's state, timings, FAL request and error."""
    error = None
    if generation["error_code"] or generation["error_message"]:
        error = {"code": generation["error_code"], "message": generation["error_message"]}
    return {
        "file_id": generation["file_id"],
        "filename": generation["filename"],
        "result_stem": generation["result_stem"],
        "state": generation["state"],
        "progress": round(generation["progress"], 2),
        "message": generation["message"],
        "error": error,
        "fal_request_id": generation["fal_request_id"],
        "attempts": generation["attempts"],
        "result_file": generation["result_file"],
        "preview_file": generation["preview_file"],
        "claimed_by": generation["claimed_by"],
        "times": {
            **{name: iso(generation[column]) for name, column in GENERATION_TIMES.items()},
            **({"next_run": iso(held_until)} if held_until is not None else {}),
        },
    }


def files_on_disk(app, job_id):
    """Return the relative names of the regular files below the job's results folder."""
    try:
        job_dir = storage.job_results_dir(app, job_id)
    except storage.UnsafePath:
        logger.warning("The results folder of job %s leaves the data folder", job_id)
        return []
    names = []
    # os.walk does not follow links: a link out of the folder is never listed through
    for root, _dirs, files in os.walk(job_dir):
        for name in files:
            path = os.path.join(root, name)
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    names.append(os.path.relpath(path, job_dir))
            except FileNotFoundError:
                continue  # removed while we walked
    return sorted(names)
