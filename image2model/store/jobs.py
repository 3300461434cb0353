"""Jobs and their generations: identifiers, creation, the state machine and derived states."""

import json
import secrets
import time
from datetime import UTC, datetime

from image2model.store import db, events

TERMINAL = ("completed", "failed", "cancelled")
IN_FLIGHT = ("submitted", "processing", "downloading")
UNFINISHED = ("queued", *IN_FLIGHT)
STATES = (*UNFINISHED, *TERMINAL)
# Which timestamp column each state stamps when it is entered.
STAMPS = {
    "submitted": "submitted_at",
    "processing": "started_at",
    "downloading": "downloading_at",
    "completed": "finished_at",
    "failed": "finished_at",
    "cancelled": "finished_at",
}


# The dispatcher's reads. A pass reads unfinished generations only, through generations_by_state:
# the table keeps every generation ever made, and a pass must not scan it.
# Lists of generator names (remote ones, blocked ones) are passed as one JSON array parameter.
IN_FLIGHT_COUNT = (
    "SELECT COUNT(*) FROM generations g JOIN jobs j USING (job_id)"
    " WHERE j.model_type IN (SELECT value FROM json_each(?)) AND (g.state IN (?, ?, ?)"
    " OR (g.state = 'queued' AND g.claimed_by IS NOT NULL AND g.lease_until >= ?))"
)
DUE_UNCLAIMED = (
    "SELECT g.id, g.state, j.model_type FROM generations g JOIN jobs j USING (job_id)"
    " WHERE g.state IN (?, ?, ?, ?) AND g.next_run_at <= ?"
    " AND (g.claimed_by IS NULL OR g.lease_until < ?) ORDER BY g.next_run_at, g.id"
)
NEXT_DUE = (
    "SELECT MIN(CASE WHEN g.claimed_by IS NOT NULL"
    " OR (g.state = 'queued' AND j.model_type IN (SELECT value FROM json_each(?)))"
    " OR j.model_type IN (SELECT value FROM json_each(?)) THEN g.deadline_at"
    " ELSE MIN(g.next_run_at, g.deadline_at) END)"
    " FROM generations g JOIN jobs j USING (job_id) WHERE g.state IN (?, ?, ?, ?)"
)
OVERDUE = (
    "SELECT g.*, j.model_type FROM generations g JOIN jobs j USING (job_id)"
    " WHERE g.state IN (?, ?, ?, ?) AND g.deadline_at < ?"
)


def visible_to(row, principal):
    """Return True if the row exists and the principal owns it (or is admin)."""
    return row is not None and (principal.is_admin or row["owner"] == principal.owner)


def new_id(prefix):
    """Return an unguessable identifier (96 random bits) with a readable prefix."""
    return f"{prefix}_{secrets.token_hex(12)}"


def new_batch_id():
    """Return a batch id in the contract's `batch_YYYYMMDD_HHMMSS_...` shape."""
    return f"batch_{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(12)}"


def unique_stems(filenames):
    """Return one result name stem per file, made unique within the job (`chair`, `chair-2`)."""
    stems, seen = [], set()
    for filename in filenames:
        base = "".join(c if c.isalnum() or c in "-_" else "_" for c in filename.rsplit(".", 1)[0])
        base = base.strip("._")[:80] or "model"
        stem, number = base, 2
        while stem.lower() in seen:
            stem, number = f"{base}-{number}", number + 1
        seen.add(stem.lower())
        stems.append(stem)
    return stems


def insert_job(conn, owner, model_type, options, file_rows, batch_id, timeout_s):
    """Insert a job with one queued generation per file; the caller holds the transaction."""
    now = time.time()
    job_id, task_id = new_id("job"), new_id("task")
    conn.execute(
        "INSERT INTO jobs (job_id, task_id, batch_id, owner, model_type, options, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (job_id, task_id, batch_id, owner, model_type, json.dumps(options, sort_keys=True), now),
    )
    for file_row, stem in zip(
        file_rows, unique_stems([f["filename"] for f in file_rows]), strict=True
    ):
        conn.execute(
            "INSERT INTO generations (job_id, file_id, result_stem, deadline_at, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, file_row["file_id"], stem, now + timeout_s, now, now),
        )
    events.record(conn, job_id, "progress", job_snapshot(conn, job_id))
    return job_id, task_id


def find_job(conn, job_id, principal):
    """Return the job row if it exists, is not deleted and the principal may see it."""
    row = conn.execute(
        "SELECT * FROM jobs WHERE job_id = ? AND deleted_at IS NULL", (job_id,)
    ).fetchone()
    return row if visible_to(row, principal) else None


def find_job_by_task(conn, task_id, principal):
    """Return the job row behind a task id, with the same visibility rule as find_job."""
    row = conn.execute("SELECT job_id FROM jobs WHERE task_id = ?", (task_id,)).fetchone()
    return find_job(conn, row["job_id"], principal) if row else None


def generations_of(conn, job_id):
    """Return the job's generations with their file's original name, in upload order."""
    return conn.execute(
        "SELECT g.*, f.filename, f.stored_path, f.content_type FROM generations g"
        " JOIN files f ON f.file_id = g.file_id WHERE g.job_id = ? ORDER BY g.id",
        (job_id,),
    ).fetchall()


def job_state(states):
    """Derive a job's (or batch's) state from its generations' states."""
    return state_of_counts(
        len(states),
        states.count("completed"),
        states.count("failed"),
        states.count("cancelled"),
        states.count("queued"),
    )


def state_of_counts(total, completed, failed, cancelled, queued):
    """Derive a job's state from how many of its generations are in which state."""
    if total == 0 or completed + failed + cancelled < total:
        return "queued" if queued == total else "processing"
    if completed:
        return "completed"
    return "cancelled" if cancelled == total else "failed"


def file_entry(generation):
    """Return the per-file record shown in progress maps and events."""
    entry = {
        "status": generation["state"],
        "progress": round(generation["progress"], 2),
        "filename": generation["filename"],
    }
    if generation["message"]:
        entry["message"] = generation["message"]
    if generation["state"] == "failed":
        entry["error"] = {"code": generation["error_code"], "message": generation["error_message"]}
    if generation["result_file"]:
        entry["model_url"] = download_url(generation["job_id"], generation["result_file"])
    return entry


def summary(generations):
    """Return the aggregate figures of a set of generations."""
    states = [g["state"] for g in generations]
    return summary_of_figures(
        {
            "total": len(states),
            # A failed file's last figure says how far it got, not how far the job is from done.
            "progress_sum": sum(
                100.0 if g["state"] in TERMINAL else g["progress"] for g in generations
            ),
            **{
                state: states.count(state)
                for state in ("completed", "cancelled", "failed", "queued")
            },
        }
    )


JOB_FIGURES = (
    "SELECT COUNT(*) AS total, TOTAL(CASE WHEN state IN (?, ?, ?) THEN 100.0 ELSE progress END)"
    " AS progress_sum, TOTAL(state = ?) AS completed, TOTAL(state = ?) AS cancelled,"
    " TOTAL(state = 'failed') AS failed, TOTAL(state = ?) AS queued"
    " FROM generations WHERE job_id = ?"
)


def summary_of_figures(figures):
    """Return a job's status, counts and progress from its sums (`JOB_FIGURES`' columns)."""
    total, completed = figures["total"], int(figures["completed"])
    failed, cancelled = int(figures["failed"]), int(figures["cancelled"])
    return {
        "status": state_of_counts(total, completed, failed, cancelled, int(figures["queued"])),
        "total_files": total,
        "completed_files": completed,
        "failed_files": failed + cancelled,
        # A finished file counts 100: a finished job reads 100.
        "progress": round(figures["progress_sum"] / total, 2) if total else 0.0,
    }


def job_snapshot(conn, job_id):
    """Return the job's current status with its per-file map (the body of progress events)."""
    generations = generations_of(conn, job_id)
    return {**summary(generations), "files": {g["file_id"]: file_entry(g) for g in generations}}


def progress_event(conn, job_id, generation_id):
    """Return a progress event body: the job's figures and the one file that changed."""
    # Written for every change of every generation: the figures are summed by SQLite over the
    # job's generations (a 500-file job would otherwise read 500 rows into Python per poll), and
    # only the changed one needs its whole row.
    figures = conn.execute(JOB_FIGURES, (*TERMINAL, "completed", "cancelled", "queued", job_id))
    changed = conn.execute(
        "SELECT g.*, f.filename FROM generations g JOIN files f ON f.file_id = g.file_id"
        " WHERE g.id = ?",
        (generation_id,),
    ).fetchone()
    return {
        **summary_of_figures(figures.fetchone()),
        "files": {changed["file_id"]: file_entry(changed)},
    }


def download_url(job_id, filename):
    """Return this server's download path of a stored result file."""
    return f"/api/v1/download/{job_id}/{filename}"


def transition(
    conn, generation_id, state, progress=None, log_lines=(), release_claim=True, **fields
):
    """Move a generation to `state` unless terminal, recording its log lines and events."""
    now = time.time()
    assignments = {"state": state, "updated_at": now, **fields}
    if state in TERMINAL and release_claim:
        assignments.update(claimed_by=None, lease_until=None)
    columns = ", ".join(f"{name} = ?" for name in assignments)
    values = list(assignments.values())
    if state in STAMPS:
        # A state's timestamp records when it was first entered.
        columns += f", {STAMPS[state]} = COALESCE({STAMPS[state]}, ?)"
        values.append(now)
    if progress is not None:
        # Progress only moves forward.
        columns += ", progress = MAX(progress, ?)"
        values.append(progress)
    with db.transaction(conn):
        cursor = conn.execute(
            f"UPDATE generations SET {columns} WHERE id = ? AND state NOT IN (?, ?, ?)",
            (*values, generation_id, *TERMINAL),
        )
        if cursor.rowcount != 1:
            return False
        row = conn.execute(
            "SELECT job_id, file_id FROM generations WHERE id = ?", (generation_id,)
        ).fetchone()
        job_id = row["job_id"]
        for line in log_lines:
            events.record(conn, job_id, "log", {"file_id": row["file_id"], "message": line})
        progress_body = progress_event(conn, job_id, generation_id)
        events.record(conn, job_id, "progress", progress_body)
        if progress_body["status"] in TERMINAL:
            snapshot = job_snapshot(conn, job_id)
            events.record(conn, job_id, *terminal_event(conn, job_id, snapshot))
    return True


def terminal_event(conn, job_id, snapshot):
    """Return `(type, payload)` of the event that ends a job's stream."""
    completed = [g for g in generations_of(conn, job_id) if g["state"] == "completed"]
    if completed:
        result = "success" if len(completed) == snapshot["total_files"] else "partial"
        return "completed", {
            **snapshot,
            "result": result,
            "model_url": download_url(job_id, completed[0]["result_file"]),
        }
    errors = [f.get("error", {}).get("message") for f in snapshot["files"].values()]
    message = next((e for e in errors if e), "Every file of the job was cancelled")
    return "error", {**snapshot, "error": message}


def log(conn, generation_id, messages, progress=None, **fields):
    """Record log lines, optional progress and fields of a still-running generation at once;
    return False if it has ended (nothing is recorded then)."""
    with db.transaction(conn):
        row = conn.execute(
            "SELECT job_id, file_id, state FROM generations WHERE id = ?", (generation_id,)
        ).fetchone()
        if row is None or row["state"] in TERMINAL:
            return False
        for message in messages:
            line = {"file_id": row["file_id"], "message": message}
            events.record(conn, row["job_id"], "log", line)
        if fields:
            columns = ", ".join(f"{name} = ?" for name in fields)
            conn.execute(
                f"UPDATE generations SET {columns} WHERE id = ?", (*fields.values(), generation_id)
            )
        if progress is not None:
            conn.execute(
                "UPDATE generations SET progress = MAX(progress, ?), message = ?,"
                " updated_at = ? WHERE id = ?",
                (progress, messages[-1] if messages else None, time.time(), generation_id),
            )
            body = progress_event(conn, row["job_id"], generation_id)
            events.record(conn, row["job_id"], "progress", body)
    return True
