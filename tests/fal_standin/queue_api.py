"""fal's queue API for a Tripo3D model: submit, status, result and cancel."""

import uuid

from . import tripo
from .jobs import COMPLETED, IN_PROGRESS, IN_QUEUE, Job
from .wire import Call, Reply, detail_reply, json_reply


def submit(standin, call: Call) -> Reply:
    """POST /{owner}/{alias}/{path}: validate the arguments and queue a request."""
    arguments, problem = call.json()
    if problem is not None:
        entry = {"loc": ["body"], "msg": f"JSON decode error: {problem}", "type": "json_invalid"}
        return detail_reply(422, [entry])
    errors = tripo.validate_input(
        arguments, lambda url: standin.storage.fetch(url, standin.base_url)
    )
    if errors and standin.validate_at == "submit":
        return detail_reply(422, errors)
    owner, alias = call.path.strip("/").split("/")[:2]
    request_id = str(uuid.uuid4())
    latency = 0.0 if errors else float(standin.latency)
    queue_time = standin.queue_time if standin.queue_time is not None else standin.latency / 4
    now = standin.board.now()
    job = Job(
        request_id=request_id,
        task_id=str(uuid.uuid4()),
        app=f"{owner}/{alias}",
        submitted_at=now,
        ready_at=now + float(queue_time),
        latency=latency,
        ahead=int(standin.queue_ahead),
        outcome="invalid" if errors else standin.result_mode,
        errors=errors,
    )
    if not errors:
        standin.storage.publish(tripo.output_files(request_id, job.outcome))
    standin.board.add(job)
    standin.record(
        "submits",
        {
            "request_id": request_id,
            "path": call.path,
            "arguments": arguments,
            "webhook": call.query.get("fal_webhook"),
            "at": now,
        },
    )
    _, position, _ = standin.board.view(request_id)
    body = {"status": IN_QUEUE, "queue_position": position, **_urls(standin, job)}
    return json_reply(200, body, {"x-fal-request-id": request_id})


def status(standin, call: Call) -> Reply:
    """GET .../requests/{id}/status?logs=: the request's state, with logs when asked."""
    found = _find(standin, call)
    if isinstance(found, Reply):
        return found
    job, position, now = found
    body = {"status": job.state, **_urls(standin, job)}
    with_logs = call.query.get("logs", "").lower() in ("true", "1")
    logs = standin.board.logs(job, now) if with_logs else None
    if job.state == IN_QUEUE:
        body["queue_position"] = position
    elif job.state == IN_PROGRESS:
        body["logs"] = logs
    else:
        error, error_type = tripo.failure(job.outcome, job.errors)
        metrics = {} if job.cancelled else {"inference_time": round(job.latency, 3)}
        body.update(logs=logs, metrics=metrics, error=error, error_type=error_type)
    headers = {"x-fal-request-id": job.request_id}
    return json_reply(200 if job.state == COMPLETED else 202, body, headers)


def result(standin, call: Call) -> Reply:
    """GET .../requests/{id}: the model's output, or the error the request ended with."""
    found = _find(standin, call)
    if isinstance(found, Reply):
        return found
    job, _, _ = found
    headers = {"x-fal-request-id": job.request_id}
    if job.state != COMPLETED:
        return detail_reply(400, "Request is still in progress", headers)
    if job.cancelled:
        message, error_type = tripo.CANCELLED
        headers["X-Fal-Error-Type"] = error_type
        return detail_reply(400, message, headers, error_type=error_type)
    if job.outcome == "invalid":
        return detail_reply(422, job.errors, headers)
    if job.outcome == "model_error":
        return detail_reply(422, [tripo.MODEL_ERROR], headers)
    files = tripo.output_files(job.request_id, job.outcome)
    return json_reply(200, tripo.output_body(standin.base_url, job.task_id, files), headers)


def cancel(standin, call: Call) -> Reply:
    """PUT .../requests/{id}/cancel: cancel a request that has not started processing."""
    found = _find(standin, call)
    request_id = call.params["request_id"]
    outcome = "missing" if isinstance(found, Reply) else standin.board.cancel(request_id)
    if outcome == "cancelled":
        reply = json_reply(202, {"status": "CANCELLATION_REQUESTED"})
    elif outcome == "in_progress":
        detail = "Request is already in progress and can no longer be cancelled"
        reply = detail_reply(400, detail, status=IN_PROGRESS)
    elif outcome == "completed":
        reply = detail_reply(400, "Request has already completed", status="ALREADY_COMPLETED")
    else:
        reply = detail_reply(404, "Request not found", status="NOT_FOUND")
    standin.record(
        "cancels", {"request_id": request_id, "outcome": outcome, "status_code": reply.status}
    )
    return reply


def _find(standin, call: Call):
    """Return (job, position, now) for the request a URL names, or a 404 reply."""
    found = standin.board.view(call.params["request_id"])
    app = f"{call.params['owner']}/{call.params['alias']}"
    if found is None or found[0].app != app:
        return detail_reply(404, "Request not found")
    return found


def _urls(standin, job: Job) -> dict:
    """Return the request's id and URLs in fal's shape: owner/alias without the path."""
    base = f"{standin.base_url}/{job.app}/requests/{job.request_id}"
    return {
        "request_id": job.request_id,
        "response_url": base,
        "status_url": base + "/status",
        "cancel_url": base + "/cancel",
    }
