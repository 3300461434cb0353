"""The guarantees a chaos round checks, read from the data folder, the database and the stand-in.

Every generation ends; no job answered with a 2xx is lost; each image reaches FAL at most once,
exactly once when its model was made; nothing partial or unowned is left under `uploads/` or
`results/`. The database is read with sqlite3, read-only, never through the server.
"""

import hashlib
import os
import sqlite3
from urllib.parse import urlsplit

TERMINAL = ("completed", "failed", "cancelled")
# The start of tripo3d.INTERRUPTED_SUBMIT: a file whose submit was sent and whose answer was lost.
INTERRUPTED = "The server stopped after sending this image to FAL"
DATABASE = "image2model.sqlite3"


def digest(data):
    """Return the name an image goes by in the checks: the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def read_database(instance_path, query, parameters=()):
    """Run one query on a read-only connection of its own; return its rows as dicts."""
    uri = f"file:{os.path.join(instance_path, DATABASE)}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(query, parameters)]
    finally:
        conn.close()


def generations(instance_path):
    """Return every generation with its job, file and state."""
    return read_database(
        instance_path,
        "SELECT g.id, g.job_id, g.state, g.progress, g.fal_request_id, g.submit_sent_at,"
        " g.claimed_by, g.error_code, g.error_message, g.result_file, g.preview_file,"
        " f.stored_path FROM generations g JOIN files f USING (file_id) ORDER BY g.id",
    )


def unfinished(instance_path):
    """Return {generation id: the fields that move when its work moves} of unfinished ones."""
    return {
        row["id"]: (row["state"], row["progress"], row["fal_request_id"], row["submit_sent_at"])
        for row in generations(instance_path)
        if row["state"] not in TERMINAL
    }


def submitted_images(fal):
    """Return {image digest: accepted submits} from what the stand-in stored and was sent."""
    counts = {}
    for submit in fal.submits:
        url = submit["arguments"].get("image_url", "")
        data = fal.storage.fetch(url, fal.base_url)
        name = digest(data) if data is not None else f"unknown image {urlsplit(url).path}"
        counts[name] = counts.get(name, 0) + 1
    return counts


def check(instance_path, fal, sent, acknowledged, client):
    """Return `(problems, figures)`: every guarantee broken, as sentences, and counts (of
    generations, accepted submits, files failed as interrupted submits and of those, the ones
    FAL never accepted).

    sent: digest -> name of every image uploaded (answered or not); acknowledged: job id ->
    digests of the uploads answered 201; client: a pipeline_helpers.Client of the server.
    """
    problems = []
    rows = generations(instance_path)
    jobs = {row["job_id"] for row in read_database(instance_path, "SELECT job_id FROM jobs")}
    for job_id in acknowledged:
        if job_id not in jobs:
            problems.append(f"job {job_id} was answered 201 and is lost")
            continue
        response = client.get(f"/api/v1/models/job/{job_id}")
        if response.status_code != 200 or response.json()["status"] not in TERMINAL:
            problems.append(f"job {job_id} answers {response.status_code} {response.text[:80]}")
    by_image, interrupted, unsent = {}, 0, 0
    for row in rows:
        path = os.path.join(instance_path, row["stored_path"])
        try:
            with open(path, "rb") as handle:
                name = digest(handle.read())
        except FileNotFoundError:
            problems.append(f"generation {row['id']}: its upload {row['stored_path']} is gone")
            continue
        if name not in sent:
            problems.append(f"generation {row['id']} is of an image never sent")
        by_image.setdefault(name, []).append(row)
    submits = submitted_images(fal)
    answered = {name for names in acknowledged.values() for name in names}
    for name in answered - by_image.keys():
        problems.append(f"image {sent[name]} was answered 201 and has no generation")
    for name, found in by_image.items():
        if len(found) > 1:
            problems.append(f"image {sent.get(name)} has {len(found)} generations")
        for row in found:
            count = submits.get(name, 0)
            label = f"generation {row['id']} ({sent.get(name)}, {row['state']})"
            if row["state"] not in TERMINAL:
                problems.append(f"{label} did not end")
            elif row["state"] == "completed":
                if count != 1:
                    problems.append(f"{label}: {count} accepted FAL submits, not 1")
            elif (row["error_message"] or "").startswith(INTERRUPTED):
                interrupted += 1
                unsent += count == 0  # killed before FAL had it: the price of the early mark
                if count > 1:
                    problems.append(f"{label}: {count} accepted FAL submits, at most 1")
            else:
                problems.append(f"{label}: {row['error_code']} {row['error_message']}")
    for name in submits.keys() - by_image.keys():
        problems.append(f"{submits[name]} FAL submits of {sent.get(name, name)}, no generation")
    problems += leftover_files(instance_path, rows)
    figures = {
        "generations": len(rows),
        "submits": sum(submits.values()),
        "interrupted": interrupted,
        "unsent": unsent,
    }
    return problems, figures


def leftover_files(instance_path, rows):
    """Return the partial and unowned files and folders under uploads/ and results/."""
    owned = {row["stored_path"] for row in rows}
    for row in rows:
        for name in (row["result_file"], row["preview_file"]):
            if name:
                owned.add(os.path.join("results", row["job_id"], name))
    batches = {row["batch_id"] for row in read_database(instance_path, "SELECT * FROM batches")}
    jobs = {row["job_id"] for row in read_database(instance_path, "SELECT * FROM jobs")}
    problems = []
    for top, known in (("uploads", batches), ("results", jobs)):
        base = os.path.join(instance_path, top)
        if not os.path.isdir(base):
            continue
        for entry in os.scandir(base):
            if entry.is_dir(follow_symlinks=False) and entry.name not in known:
                problems.append(f"unowned folder {top}/{entry.name}")
        for root, _dirs, files in os.walk(base):
            for name in files:
                relative = os.path.relpath(os.path.join(root, name), instance_path)
                if name.startswith(".") or name.endswith(".part"):
                    problems.append(f"partial file {relative}")
                elif relative not in owned:
                    problems.append(f"unowned file {relative}")
    return problems
