"""The `tripo3d` generator: FAL Tripo3D through fal-client's queue API, a short step at a time."""

import base64
import logging
import os
import re
import time

import fal_client
import fal_client.client
import httpx

from image2model.files import storage
from image2model.generators import fal_connection
from image2model.generators.base import Generator
from image2model.generators.fal_connection import (
    MaybeSubmitted,
    client_for,
    download_client,
    fetch_output,
    handle_for,
)
from image2model.generators.options import tripo3d_options
from image2model.models3d.gltf import InvalidModelError, UnsupportedModelError, check_glb

logger = logging.getLogger(__name__)

MODEL_ID = "tripo3d/tripo/v2.5/image-to-3d"
MAX_RESULT_BYTES = 512 * 1024 * 1024
PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
INTERRUPTED_SUBMIT = (
    "The server stopped after sending this image to FAL and before storing FAL's answer; it is"
    " not sent again, so that it is never paid for twice"
)


class Retry(Exception):
    """A transient failure worth trying again later."""


class DownloadRefused(Exception):
    """A result file URL answered with a client error: trying again will not help."""


def step(run):
    """Advance a generation: submit it when queued, else poll it (re-attaching by request id)."""
    try:
        if run.row["fal_request_id"] is not None:
            poll(run)
        elif run.row["submit_sent_at"] is not None:
            run.fail("FAL_API_ERROR", INTERRUPTED_SUBMIT)
        else:
            submit(run)
    except Exception as error:
        outcome = classify(error)
        if outcome is None:
            raise
        retry, message = outcome
        if not retry:
            run.fail("FAL_API_ERROR", message)
            return
        attempts = run.row["attempts"] + 1
        if attempts >= run.app.config["FAL_MAX_ATTEMPTS"]:
            run.fail("FAL_API_ERROR", f"FAL did not answer after {attempts} attempts: {message}")
            return
        delay = min(30.0, run.app.config["FAL_RETRY_BASE"] * 2 ** (attempts - 1))
        run.log(f"FAL error, retrying in {delay:.1f}s: {message}")
        # FAL answered, or the submit never left: it was not accepted and may be sent again.
        run.run_again_in(delay, attempts=attempts, submit_sent_at=None)


def classify(error):
    """Return `(retry, message)` for a FAL or network error, or None for our own bugs."""
    if isinstance(error, fal_client.client.FalClientHTTPError):
        message = detail_message(error.message)
        if error.status_code in (401, 403):
            return False, f"FAL rejected the credentials (HTTP {error.status_code})"
        if error.status_code == 429 or error.status_code >= 500:
            return True, f"HTTP {error.status_code}: {message}"
        return False, f"FAL refused the request (HTTP {error.status_code}): {message}"
    if isinstance(error, httpx.HTTPStatusError):
        code = error.response.status_code
        if code in (401, 403):
            return False, f"FAL rejected the credentials (HTTP {code})"
        return code == 429 or code >= 500, f"HTTP {code} from FAL"
    if isinstance(error, (httpx.TransportError, Retry)):
        return True, f"{type(error).__name__}: {error}"
    if isinstance(error, DownloadRefused):
        return False, str(error)
    if isinstance(error, (httpx.HTTPError, httpx.InvalidURL)):
        # Redirect loops, undecodable bodies, bad URLs from FAL: trying again will not help.
        return False, f"FAL's answer could not be used ({type(error).__name__}: {error})"
    if isinstance(error, MaybeSubmitted):
        return False, (
            f"The connection to FAL broke after the request was sent ({error}); it is not sent"
            " again, so that it is never paid for twice"
        )
    if isinstance(error, (InvalidModelError, UnsupportedModelError)):
        return False, f"FAL returned an unusable model: {error}"
    return None


def detail_message(detail):
    """Return a readable message from FAL's `detail` (a string or a list of validation errors)."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def image_url(run, client):
    """Return the image as FAL will read it: uploaded to fal storage, or an inline data URI."""
    content_type = run.row["content_type"]
    if run.app.config["FAL_UPLOAD"] == "inline":
        with open(run.image_path, "rb") as handle:
            encoded = base64.b64encode(handle.read()).decode("ascii")
        return f"data:{content_type};base64,{encoded}"
    with open(run.image_path, "rb") as handle:
        return client.upload(handle.read(), content_type, file_name=run.row["filename"])


def submit(run):
    """Send the image and submit the request; store its id and URLs before anything else."""
    client = client_for(run.app)
    arguments = {"image_url": image_url(run, client), **run.options}
    # Stored before sending: a crash before the answer is stored must not lead to a second one.
    if not run.record(submit_sent_at=time.time()):
        return  # it ended meanwhile (its deadline passed): nothing is sent
    handle = client.submit(MODEL_ID, arguments=arguments)
    stored = run.transition(
        "submitted",
        progress=5,
        message=f"Submitted to FAL as request {handle.request_id}",
        fal_request_id=handle.request_id,
        fal_status_url=handle.status_url,
        fal_response_url=handle.response_url,
        fal_cancel_url=handle.cancel_url,
        attempts=0,
        # The deadline covers FAL's work, not the wait for a free slot on this server.
        deadline_at=time.time() + run.app.config["JOB_TIMEOUT"],
    )
    if not stored:
        # The generation ended while we submitted (its deadline passed): do not leave a paid
        # request running for nobody.
        logger.warning(
            "Generation %s ended during submit; cancelling %s", run.id, handle.request_id
        )
        cancel(
            run.app,
            {
                "fal_request_id": handle.request_id,
                "fal_response_url": handle.response_url,
                "fal_status_url": handle.status_url,
                "fal_cancel_url": handle.cancel_url,
            },
        )
        return
    run.run_again_in(run.app.config["FAL_POLL_INTERVAL"])


def cancel(app, row):
    """Ask FAL to cancel a request we gave up on, so a queued one is not run and paid for."""
    if not row["fal_request_id"]:
        return
    try:
        handle_for(app, row).cancel()
        logger.info("Cancelled FAL request %s", row["fal_request_id"])
    except Exception as error:  # best effort: FAL refuses once processing has started
        logger.info("FAL did not cancel request %s: %s", row["fal_request_id"], error)


def poll(run):
    """Ask FAL for the request's status; turn it into progress and logs, or fetch the result."""
    handle = handle_for(run.app, run.row)
    status = handle.status(with_logs=True)
    if isinstance(status, fal_client.Completed):
        _progress, logged = new_logs(run, status.logs, 88.0)
        if status.error:
            message = f"FAL could not generate the model: {status.error}"
            run.transition("failed", error_code="FAL_API_ERROR", error_message=message, **logged)
            return
        run.transition("downloading", progress=90, message="Downloading the result", **logged)
        fetch_result(run)
        return
    if isinstance(status, fal_client.Queued):
        run.transition(
            "submitted",
            progress=max(5.0, 10.0 - status.position),
            message=f"Waiting in FAL's queue (position {status.position})",
        )
    else:
        progress, logged = new_logs(run, status.logs, 15.0)
        run.transition("processing", progress=progress, message="Generating on FAL", **logged)
    # A poll that follows retried ones resets their count.
    reset = {"attempts": 0} if run.row["attempts"] else {}
    run.poll_again(run.app.config["FAL_POLL_INTERVAL"], **reset)


def new_logs(run, logs, floor):
    """Return the progress unseen FAL log lines imply and the transition fields recording them."""
    logs = logs or []
    seen = run.row["fal_logs_seen"]
    progress = max(floor, run.row["progress"])
    messages = []
    for entry in logs[seen:]:
        message = str(entry.get("message", "")) if isinstance(entry, dict) else str(entry)
        match = PERCENT.search(message)
        if match:
            progress = max(progress, 15.0 + min(100.0, float(match.group(1))) * 0.73)
        messages.append(message)
    logged = {"log_lines": messages, "fal_logs_seen": len(logs)} if messages else {}
    return progress, logged


def fetch_result(run):
    """Fetch the output, download mesh and preview at once, verify and store them."""
    output = fetch_output(handle_for(run.app, run.row))
    mesh = output.get("model_mesh") or output.get("base_model")
    if not mesh or not mesh.get("url"):
        run.fail("FAL_API_ERROR", "FAL's result has no model_mesh to download")
        return
    directory = storage.job_results_dir(run.app, run.row["job_id"], create=True)
    stem = run.row["result_stem"]
    result_file = f"{stem}.glb"
    session = download_client(run.app)
    # A structural check: loading the mesh and decoding its textures would hold the GIL for
    # tens of milliseconds per model while other generations wait to be polled. A GLB that
    # passes but does not load is still served as GLB; its conversions answer 422.
    download(session, mesh["url"], os.path.join(directory, result_file), verify=check_glb)
    preview_file = None
    preview = output.get("rendered_image")
    if preview and preview.get("url"):
        preview_file = storage.preview_name(stem, ".webp")
        download(session, preview["url"], os.path.join(directory, preview_file))
    run.transition(
        "completed",
        progress=100,
        message="Model ready",
        result_file=result_file,
        preview_file=preview_file,
    )


def download(session, url, path, verify=None):
    """Stream a URL into `path` atomically, checking it with `verify(temp path)` first."""

    def write(handle):
        with session.stream("GET", url) as response:
            code = response.status_code
            if code >= 500 or code in (408, 429):
                raise Retry(f"HTTP {code} downloading the result")
            if code >= 400:
                raise DownloadRefused(f"FAL's result file answered HTTP {code}")
            received = 0
            for chunk in response.iter_bytes(chunk_size=1024 * 1024):
                received += len(chunk)
                if received > MAX_RESULT_BYTES:
                    raise InvalidModelError("the result is larger than this server accepts")
                handle.write(chunk)
        handle.flush()
        if verify is not None:
            verify(handle.name)

    storage.atomic_write(path, write)


GENERATOR = Generator(
    name="tripo3d",
    title="Tripo3D",
    description="FAL.AI Tripo3D v2.5: AI reconstruction of a textured 3D model from one image",
    remote=True,
    estimated_seconds=90,
    parse_options=tripo3d_options,
    step=step,
    needs="FAL_KEY",
    cancel=cancel,
    init_app=fal_connection.init_app,
)
