"""The FAL stand-in, driven by the real fal-client in fresh processes configured as the app's."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trimesh
from PIL import Image

from tests.fal_standin import FalStandIn

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APP = "tripo3d/tripo/v2.5/image-to-3d"

# Runs first in every client process: fal_client reads FAL_QUEUE_RUN_HOST at import from the
# environment, and the storage hosts are module constants the process points at the stand-in.
PRELUDE = '''
import io
import json
import sys
import time

import fal_client
import fal_client.client
import httpx
from fal_client import Completed, FalClientHTTPError, InProgress, Queued
from PIL import Image

BASE = sys.argv[1]
fal_client.client.REST_URL = fal_client.client.CDN_URL = BASE
APP = "tripo3d/tripo/v2.5/image-to-3d"
client = fal_client.SyncClient()
with io.BytesIO() as buffer:
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buffer, format="PNG")
    IMAGE = fal_client.encode(buffer.getvalue(), "image/png")


def failure(call):
    """Run call; describe the error it raised, or return None."""
    try:
        call()
    except FalClientHTTPError as exc:
        return {"kind": "FalClientHTTPError", "status_code": exc.status_code,
                "message": exc.message, "error_type": exc.error_type}
    except httpx.HTTPStatusError as exc:
        return {"kind": "HTTPStatusError", "status_code": exc.response.status_code}
    except httpx.HTTPError as exc:
        return {"kind": type(exc).__name__}
    return None


def describe(status):
    """Return a fal_client status as a dict."""
    if isinstance(status, Queued):
        return {"status": "IN_QUEUE", "position": status.position}
    if isinstance(status, InProgress):
        return {"status": "IN_PROGRESS", "logs": status.logs}
    return {"status": "COMPLETED", "logs": status.logs, "metrics": status.metrics,
            "error": status.error, "error_type": status.error_type}


def poll(handle, with_logs=True):
    """Return every status seen while polling a request to completion."""
    seen = []
    while True:
        status = handle.status(with_logs=with_logs)
        seen.append(describe(status))
        if isinstance(status, Completed):
            return seen
        time.sleep(0.02)


def done(**values):
    """Hand the results back to the test as the last line of output."""
    print(json.dumps(values))
'''


def client_command(base_url, script, *args):
    """Return the argv of a client process running `script` after the prelude."""
    source = PRELUDE + textwrap.dedent(script)
    return [sys.executable, "-c", source, base_url, *map(str, args)]


def run_script(env, base_url, script, *args, timeout=30):
    """Run a client script with `env` added to the environment; return what it passed to done()."""
    completed = subprocess.run(
        client_command(base_url, script, *args),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def run_client(standin, script, *args, timeout=30):
    """Run a client script against a stand-in; return what it passed to done()."""
    return run_script(standin.env(), standin.base_url, script, *args, timeout=timeout)


def stage_calls(standin, stage):
    """Return the calls the stand-in routed to one stage."""
    return [call for call in standin.calls if call["stage"] == stage]


@pytest.fixture
def standin():
    """Start a stand-in with short timings."""
    with FalStandIn(latency=0.3, queue_time=0.1) as server:
        yield server


@pytest.fixture
def http(standin):
    """Return an httpx client that trusts the stand-in and sends its key."""
    headers = {"Authorization": f"Key {standin.key}"}
    with httpx.Client(verify=standin.ssl_context(), headers=headers) as client:
        yield client


@pytest.fixture
def png_path(tmp_path):
    """Write a small PNG photo."""
    path = tmp_path / "photo.png"
    Image.new("RGB", (24, 24), (30, 120, 60)).save(path)
    return path


def test_request_goes_through_queue_progress_and_completion(standin, tmp_path):
    standin.latency, standin.queue_time, standin.queue_ahead = 0.4, 0.3, 3
    out = run_client(
        standin,
        """
        handle = client.submit(APP, {"image_url": IMAGE, "texture": "HD", "face_limit": 5000})
        seen = poll(handle)
        result = handle.get()
        quiet = describe(handle.status(with_logs=False))
        lengths = {}
        for key in ("model_mesh", "rendered_image"):
            response = httpx.get(result[key]["url"])
            with open(f"{sys.argv[2]}/{result[key]['file_name']}", "wb") as file:
                file.write(response.content)
            lengths[key] = int(response.headers["content-length"])
        done(request_id=handle.request_id, seen=seen, result=result, quiet=quiet, lengths=lengths)
        """,
        tmp_path,
    )
    seen = out["seen"]
    ranks = [["IN_QUEUE", "IN_PROGRESS", "COMPLETED"].index(s["status"]) for s in seen]
    assert ranks == sorted(ranks)
    positions = [s["position"] for s in seen if s["status"] == "IN_QUEUE"]
    assert positions == sorted(positions, reverse=True) and positions[0] > positions[-1]
    progress = [s["logs"] for s in seen if s["status"] == "IN_PROGRESS"]
    assert progress and [len(logs) for logs in progress] == sorted(len(logs) for logs in progress)
    final = seen[-1]
    assert final["metrics"] == {"inference_time": 0.4}
    assert final["error"] is None and final["error_type"] is None
    assert any("%" in entry["message"] for entry in final["logs"])
    assert all(set(entry) == {"message", "level", "source", "timestamp"} for entry in final["logs"])
    assert out["quiet"]["status"] == "COMPLETED" and out["quiet"]["logs"] is None
    assert standin.submits[0]["request_id"] == out["request_id"]
    assert standin.submits[0]["arguments"]["texture"] == "HD"

    result = out["result"]
    assert result["task_id"]
    mesh, preview = result["model_mesh"], result["rendered_image"]
    assert (mesh["content_type"], mesh["file_name"]) == ("application/octet-stream", "model.glb")
    assert (preview["content_type"], preview["file_name"]) == ("image/webp", "preview.webp")
    assert out["lengths"] == {
        "model_mesh": mesh["file_size"],
        "rendered_image": preview["file_size"],
    }
    assert (tmp_path / "model.glb").read_bytes()[:4] == b"glTF"
    scene = trimesh.load(tmp_path / "model.glb", file_type="glb")
    geometry = next(iter(scene.geometry.values()))
    assert len(geometry.faces) > 0 and geometry.visual.kind == "texture"
    with Image.open(tmp_path / "preview.webp") as picture:
        assert picture.format == "WEBP"


def test_another_process_reattaches_by_request_id(standin):
    first = run_client(
        standin,
        """
        handle = client.submit(APP, {"image_url": IMAGE})
        done(request_id=handle.request_id, status_url=handle.status_url,
             response_url=handle.response_url, cancel_url=handle.cancel_url)
        """,
    )
    request_id = first["request_id"]
    base = f"{standin.base_url}/tripo3d/tripo/requests/{request_id}"
    assert first == {
        "request_id": request_id,
        "response_url": base,
        "status_url": base + "/status",
        "cancel_url": base + "/cancel",
    }
    second = run_client(
        standin,
        """
        request_id = sys.argv[2]
        handle = client.get_handle(APP, request_id)
        result = handle.get()
        status = describe(client.status(APP, request_id, with_logs=True))
        again = client.result(APP, request_id)
        missing = failure(lambda: client.status(APP, "no-such-request"))
        done(status_url=handle.status_url, result=result, again=again, status=status,
             missing=missing)
        """,
        request_id,
    )
    assert second["status_url"] == base + "/status"
    assert second["status"]["status"] == "COMPLETED"
    assert second["result"] == second["again"] and "model_mesh" in second["result"]
    assert second["missing"]["status_code"] == 404
    assert standin.submit_count == 1


def test_urls_with_the_endpoint_path_also_resolve(standin, http):
    standin.queue_time = 5.0
    response = http.post(f"{standin.base_url}/{APP}", json={"image_url": tiny_data_uri()})
    request_id = response.json()["request_id"]
    assert response.headers["x-fal-request-id"] == request_id
    status = http.get(f"{standin.base_url}/{APP}/requests/{request_id}/status")
    assert status.status_code == 202 and status.json()["status"] == "IN_QUEUE"
    other_app = http.get(f"{standin.base_url}/fal-ai/flux/requests/{request_id}/status")
    assert other_app.status_code == 404


def test_cancel_works_only_while_queued(standin):
    standin.concurrency, standin.latency, standin.queue_time = 1, 1.0, 0.0
    out = run_client(
        standin,
        """
        running = client.submit(APP, {"image_url": IMAGE})
        queued = client.submit(APP, {"image_url": IMAGE})
        before = describe(queued.status())
        cancelled = failure(queued.cancel)
        after = describe(queued.status(with_logs=True))
        result = failure(queued.get)
        too_late = failure(running.cancel)
        done(ids=[running.request_id, queued.request_id], before=before, cancelled=cancelled,
             after=after, result=result, too_late=too_late)
        """,
    )
    running_id, queued_id = out["ids"]
    assert out["before"] == {"status": "IN_QUEUE", "position": 0}
    assert out["cancelled"] is None
    assert out["after"]["status"] == "COMPLETED"
    assert out["after"]["error"] and out["after"]["error_type"] == "request_cancelled"
    assert out["result"]["status_code"] == 400
    assert out["result"]["error_type"] == "request_cancelled"
    assert out["too_late"]["status_code"] == 400
    assert "in progress" in out["too_late"]["message"]
    assert standin.cancels == [
        {"request_id": queued_id, "outcome": "cancelled", "status_code": 202},
        {"request_id": running_id, "outcome": "in_progress", "status_code": 400},
    ]


def test_upload_via_cdn_gives_a_url_the_model_accepts(standin, png_path):
    out = run_client(
        standin,
        """
        url = client.upload_file(sys.argv[2])
        downloaded = httpx.get(url)
        with open(sys.argv[2], "rb") as file:
            same = downloaded.content == file.read()
        handle = client.submit(APP, {"image_url": url})
        done(url=url, same=same, content_type=downloaded.headers["content-type"],
             result=handle.get())
        """,
        png_path,
    )
    assert out["same"] and out["content_type"] == "image/png"
    assert standin.uploads == [
        {
            "via": "cdn",
            "file_name": "photo.png",
            "content_type": "image/png",
            "size": png_path.stat().st_size,
            "url": out["url"],
        }
    ]
    assert [call["stage"] for call in standin.calls][:2] == ["token", "upload"]
    assert "model_mesh" in out["result"]


def test_failed_cdn_upload_falls_back_to_a_signed_storage_upload(standin, png_path):
    standin.fail_next("upload", 500)
    out = run_client(
        standin,
        """
        url = client.upload_file(sys.argv[2])
        handle = client.submit(APP, {"image_url": url})
        done(url=url, downloaded=len(httpx.get(url).content), result=handle.get())
        """,
        png_path,
    )
    signed_put = urlsplit(out["url"]).path.replace("/files/gcs/", "/storage/gcs/")
    assert [(call["path"], call["status"]) for call in stage_calls(standin, "upload")] == [
        ("/files/upload", 500),
        ("/storage/upload/initiate", 200),
        (signed_put, 200),
    ]
    assert [upload["via"] for upload in standin.uploads] == ["gcs"]
    assert out["downloaded"] == png_path.stat().st_size
    assert "model_mesh" in out["result"]


def test_token_failure_reaches_the_uploader(standin):
    standin.fail_next("token", 503)
    out = run_client(
        standin,
        """
        first = failure(lambda: client.upload(b"abc", "image/png", file_name="a.png"))
        second = client.upload(b"abc", "image/png", file_name="a.png")
        done(first=first, second=second)
        """,
    )
    assert out["first"] == {"kind": "HTTPStatusError", "status_code": 503}
    assert out["second"].endswith("/a.png")


def test_wrong_or_missing_key_is_refused_with_401(standin, http):
    out = run_client(
        standin,
        """
        bad = fal_client.SyncClient(key="wrong-key")
        done(submit=failure(lambda: bad.submit(APP, {"image_url": IMAGE})),
             status=failure(lambda: bad.status(APP, "any-request")),
             upload=failure(lambda: bad.upload(b"abc", "image/png")))
        """,
    )
    assert out["submit"] == {
        "kind": "FalClientHTTPError",
        "status_code": 401,
        "message": "Invalid key",
        "error_type": None,
    }
    assert out["status"]["status_code"] == 401
    assert out["upload"] == {"kind": "HTTPStatusError", "status_code": 401}
    assert standin.submit_count == 0
    anonymous = http.post(f"{standin.base_url}/{APP}", json={}, headers={"Authorization": ""})
    assert anonymous.status_code == 401 and "detail" in anonymous.json()
    forged = http.post(
        f"{standin.base_url}/files/upload", content=b"x", headers={"Authorization": "Bearer nope"}
    )
    assert forged.status_code == 401


VALIDATION_CASES = {
    "missing-image": ({}, "image_url", "missing"),
    "bad-texture": ({"texture": "ultra"}, "texture", "literal_error"),
    "zero-face-limit": ({"face_limit": 0}, "face_limit", "greater_than"),
    "text-face-limit": ({"face_limit": "many"}, "face_limit", "int_type"),
    "bool-face-limit": ({"face_limit": True}, "face_limit", "int_type"),
    "bad-alignment": ({"texture_alignment": "mesh"}, "texture_alignment", "literal_error"),
    "bad-orientation": ({"orientation": "upside_down"}, "orientation", "literal_error"),
    "foreign-url": (
        {"image_url": "https://example.com/cat.png"},
        "image_url",
        "file_download_error",
    ),
    "unknown-file": (
        {"image_url": "<BASE>/files/input/x/cat.png"},
        "image_url",
        "file_download_error",
    ),
    "not-base64": ({"image_url": "data:image/png;base64,@@"}, "image_url", "image_load_error"),
    "not-an-image": (
        {"image_url": "data:image/png;base64,aGVsbG8="},
        "image_url",
        "image_load_error",
    ),
}
VALID_ARGUMENTS = {
    "texture": "no",
    "pbr": True,
    "seed": 1,
    "texture_seed": 2,
    "face_limit": 1000,
    "texture_alignment": "geometry",
    "orientation": "align_image",
    "auto_size": True,
}


@pytest.fixture(scope="module")
def validation_outcomes():
    """Submit every validation case through fal-client once; return the errors and submit count."""
    cases = {
        name: {"image_url": "<IMAGE>", **arguments}
        for name, (arguments, *_) in VALIDATION_CASES.items()
    }
    cases["missing-image"] = {}
    cases["not-an-object"] = [1, 2]
    cases["valid"] = {"image_url": "<IMAGE>", **VALID_ARGUMENTS}
    with FalStandIn(latency=0.1, queue_time=0.0) as server:
        out = run_client(
            server,
            """
            cases = json.loads(sys.argv[2].replace("<IMAGE>", IMAGE).replace("<BASE>", BASE))
            done(**{name: failure(lambda a=arguments: client.submit(APP, a))
                    for name, arguments in cases.items()})
            """,
            json.dumps(cases),
        )
        return out, server.submit_count


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_invalid_input_is_refused_with_422(validation_outcomes, case):
    _, field, kind = VALIDATION_CASES[case]
    error = validation_outcomes[0][case]
    assert (error["kind"], error["status_code"]) == ("FalClientHTTPError", 422)
    assert [(entry["loc"], entry["type"]) for entry in error["message"]] == [
        (["body", field], kind)
    ]
    assert all(entry["msg"] for entry in error["message"])


def test_body_that_is_not_an_object_is_refused(validation_outcomes):
    error = validation_outcomes[0]["not-an-object"]
    assert error["status_code"] == 422 and error["message"][0]["loc"] == ["body"]


def test_valid_input_with_every_option_is_accepted_and_alone_recorded(validation_outcomes):
    outcomes, submit_count = validation_outcomes
    assert outcomes["valid"] is None
    assert submit_count == 1


def test_validation_can_be_left_to_the_runner_as_fal_queue_does():
    with FalStandIn(latency=0.2, queue_time=0.0, validate_at="result") as server:
        out = run_client(
            server,
            """
            handle = client.submit(APP, {"image_url": IMAGE, "texture": "ultra"})
            done(final=poll(handle)[-1], result=failure(handle.get))
            """,
        )
        assert server.submit_count == 1
    assert out["final"]["error_type"] == "literal_error" and out["final"]["error"]
    assert out["result"]["status_code"] == 422
    assert out["result"]["message"][0]["loc"] == ["body", "texture"]


NGINX_PAGE = "<html><head><title>503</title></head><body><center>nginx</center></body></html>"


@pytest.mark.parametrize(
    ("status", "body", "headers", "retried"),
    [
        (429, None, None, True),
        (503, NGINX_PAGE, None, True),
        (504, NGINX_PAGE.replace("503", "504"), None, True),
        (503, NGINX_PAGE, {"x-fal-request-id": "from-fal"}, False),
        (502, None, None, False),
        (500, None, None, False),
    ],
    ids=["429", "ingress-503", "ingress-504", "app-503", "json-502", "500"],
)
def test_status_faults_are_retried_by_the_client_as_fal_client_decides(
    standin, status, body, headers, retried
):
    standin.queue_time = 5.0
    standin.fail_next("status", status, body=body, headers=headers)
    out = run_client(
        standin,
        """
        handle = client.submit(APP, {"image_url": IMAGE})
        done(error=failure(handle.status))
        """,
    )
    statuses = [call["status"] for call in stage_calls(standin, "status")]
    if retried:
        assert out["error"] is None and statuses == [status, 202]
    else:
        assert out["error"]["status_code"] == status and statuses == [status]


def test_failed_submit_is_not_recorded_and_429_is_retried(standin):
    standin.fail_next("submit", 500)
    standin.fail_next("submit", 429, times=2)
    out = run_client(
        standin,
        """
        first = failure(lambda: client.submit(APP, {"image_url": IMAGE}))
        second = client.submit(APP, {"image_url": IMAGE})
        done(first=first, second=second.request_id)
        """,
    )
    assert out["first"]["status_code"] == 500
    assert [call["status"] for call in stage_calls(standin, "submit")] == [500, 429, 429, 200]
    assert [submit["request_id"] for submit in standin.submits] == [out["second"]]


def test_result_fault_carries_error_type(standin):
    standin.fail_next(
        "result",
        504,
        body={"detail": "Request timed out", "error_type": "request_timeout"},
        headers={"X-Fal-Error-Type": "request_timeout", "x-fal-request-id": "from-fal"},
    )
    out = run_client(
        standin,
        """
        handle = client.submit(APP, {"image_url": IMAGE})
        done(first=failure(handle.get), second=handle.get())
        """,
    )
    assert out["first"]["status_code"] == 504
    assert out["first"]["error_type"] == "request_timeout"
    assert "model_mesh" in out["second"]


def test_dropped_submit_reply_makes_the_client_submit_twice(standin):
    standin.drop_next("submit")
    standin.drop_next("status")
    out = run_client(
        standin,
        """
        handle = client.submit(APP, {"image_url": IMAGE})
        done(request_id=handle.request_id, status=describe(handle.status())["status"])
        """,
    )
    assert standin.submit_count == 2
    assert standin.submits[-1]["request_id"] == out["request_id"]
    assert out["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert [call.get("status") for call in stage_calls(standin, "status")] == [None, 202]


def test_a_reply_cut_off_in_its_body_makes_the_client_submit_again(standin):
    standin.cut_next("submit")
    out = run_client(
        standin,
        """
        handle = client.submit(APP, {"image_url": IMAGE})
        done(request_id=handle.request_id)
        """,
    )
    assert standin.submit_count == 2  # the first was accepted: fal-client alone pays twice
    assert standin.submits[-1]["request_id"] == out["request_id"]
    assert [call["status"] for call in stage_calls(standin, "submit")] == [200, 200]


def test_hanging_submit_times_out_and_is_resubmitted(standin):
    standin.hang("submit", 30)
    command = client_command(
        standin.base_url,
        """
        patient = fal_client.SyncClient(default_timeout=0.3)
        done(request_id=patient.submit(APP, {"image_url": IMAGE}).request_id)
        """,
    )
    env = {**os.environ, **standin.env()}
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as process:
        try:
            standin.wait_for(lambda: standin.submit_count >= 2, timeout=10)
        finally:
            standin.hang("submit", 0)
        stdout, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    request_id = json.loads(stdout.splitlines()[-1])["request_id"]
    assert standin.submit_count >= 2
    assert request_id in [submit["request_id"] for submit in standin.submits]


def test_hanging_status_holds_the_answer(standin):
    standin.hang("status", 0.5)
    out = run_client(
        standin,
        """
        handle = client.submit(APP, {"image_url": IMAGE})
        started = time.monotonic()
        handle.status()
        done(elapsed=time.monotonic() - started)
        """,
    )
    assert out["elapsed"] >= 0.5


@pytest.mark.parametrize("mode", ["missing_mesh", "bad_glb", "model_error"])
def test_result_modes_are_visible_to_the_client(standin, mode):
    standin.result_mode = mode
    out = run_client(
        standin,
        """
        handle = client.submit(APP, {"image_url": IMAGE})
        final = poll(handle)[-1]
        error = failure(handle.get)
        result = None if error else handle.get()
        head = None
        if result and "model_mesh" in result:
            head = httpx.get(result["model_mesh"]["url"]).content[:4].hex()
        done(final=final, error=error, result=result, head=head)
        """,
    )
    if mode == "missing_mesh":
        assert "model_mesh" not in out["result"] and "rendered_image" in out["result"]
    elif mode == "bad_glb":
        assert out["result"]["model_mesh"]["file_name"] == "model.glb"
        assert bytes.fromhex(out["head"]) != b"glTF"
    else:
        assert out["final"]["error"] and out["final"]["error_type"]
        assert out["error"]["status_code"] == 422
        assert isinstance(out["error"]["message"], list) and out["error"]["message"][0]["msg"]


def test_concurrency_limit_holds_extra_requests_in_queue():
    with FalStandIn(latency=0.5, queue_time=0.0, concurrency=2) as server:
        out = run_client(
            server,
            """
            handles = [client.submit(APP, {"image_url": IMAGE}) for _ in range(4)]
            early = [describe(handle.status()) for handle in handles]
            results = [handle.get() for handle in handles]
            done(ids=[handle.request_id for handle in handles], early=early,
                 meshes=sum("model_mesh" in result for result in results))
            """,
        )
        jobs = [server.board.view(request_id)[0] for request_id in out["ids"]]
    assert [status["status"] for status in out["early"]] == ["IN_PROGRESS"] * 2 + ["IN_QUEUE"] * 2
    assert [status.get("position") for status in out["early"][2:]] == [0, 1]
    assert out["meshes"] == 4
    assert jobs[2].started_at == min(jobs[0].finished_at, jobs[1].finished_at)
    assert jobs[3].started_at == max(jobs[0].finished_at, jobs[1].finished_at)


def test_latency_changes_apply_to_later_requests(standin, http):
    standin.queue_time = 0.0
    first = http.post(f"{standin.base_url}/{APP}", json={"image_url": tiny_data_uri()}).json()
    standin.latency = 0.1
    second = http.post(f"{standin.base_url}/{APP}", json={"image_url": tiny_data_uri()}).json()
    standin.wait_for(lambda: standin.state(first["request_id"]) == "COMPLETED", timeout=5)
    metrics = [http.get(reply["status_url"]).json()["metrics"] for reply in (first, second)]
    assert metrics == [{"inference_time": 0.3}, {"inference_time": 0.1}]


def test_files_are_public_and_sized(standin, http):
    standin.queue_time, standin.latency = 0.0, 0.0
    reply = http.post(f"{standin.base_url}/{APP}", json={"image_url": tiny_data_uri()}).json()
    standin.wait_for(lambda: standin.state(reply["request_id"]) == "COMPLETED", timeout=5)
    mesh = http.get(reply["response_url"]).json()["model_mesh"]
    with httpx.Client(verify=standin.ssl_context()) as anonymous:
        head = anonymous.head(mesh["url"])
        body = anonymous.get(mesh["url"])
        missing = anonymous.get(f"{standin.base_url}/files/output/nothing/model.glb")
    assert int(head.headers["content-length"]) == mesh["file_size"] and head.content == b""
    assert body.content[:4] == b"glTF" and len(body.content) == mesh["file_size"]
    assert missing.status_code == 404
    assert http.get(f"{standin.base_url}/nowhere").status_code == 404


def test_stop_and_start_again_keeps_port_and_requests(standin, http):
    reply = http.post(f"{standin.base_url}/{APP}", json={"image_url": tiny_data_uri()}).json()
    host = standin.host
    standin.stop()
    with pytest.raises(httpx.ConnectError):
        http.get(reply["status_url"])
    standin.start()
    assert standin.host == host
    assert http.get(reply["status_url"]).json()["request_id"] == reply["request_id"]


def test_wait_for_raises_when_the_condition_never_holds(standin):
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        standin.wait_for(lambda: standin.submit_count > 0, timeout=0.2)
    assert time.monotonic() - started < 2


def test_command_line_prints_client_settings_and_serves_until_interrupted():
    command = [sys.executable, "-m", "tests.fal_standin", "--port", "0", "--latency", "0.1"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as process:
        env = {}
        for line in process.stdout:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                env[name] = value
            if line.startswith("# serving"):
                break
        try:
            out = run_script(
                env,
                f"https://{env['FAL_QUEUE_RUN_HOST']}",
                """
                url = client.upload(b"abc", "image/png", file_name="a.png")
                result = client.submit(APP, {"image_url": IMAGE}).get()
                done(url=url, mesh=result["model_mesh"]["file_name"])
                """,
            )
        finally:
            process.send_signal(signal.SIGINT)
            process.stdout.read()
        assert process.wait(timeout=10) == 0
    assert set(env) == {"FAL_KEY", "FAL_QUEUE_RUN_HOST", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}
    assert out["mesh"] == "model.glb"
    assert not os.path.exists(env["SSL_CERT_FILE"])


def tiny_data_uri():
    """Return a 1x1 PNG as a data URI."""
    with io.BytesIO() as buffer:
        Image.new("RGB", (1, 1)).save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
