"""Benchmark the cost of a request: the real server against a bare Flask app, same gunicorn.

Run by hand: .venv/bin/python bench/http_cost.py [--duration 5] [--rounds 3] [--requests 2000]
Starts the real server as `make run` does (on a fresh data folder, a known key and a rate limit
that refuses nothing), uploads one small PNG for a relief job and waits for it to finish, and
starts a bare Flask app (one route returning a small JSON dict) under gunicorn with the settings
of gunicorn.conf.py that matter (gthread, one worker, its threads, keep-alive). Then rounds of
`wrk -t2 -c16`: the bare app before and after each of the health probes and the job's status
(with its Bearer key). Prints the median req/s and the median ratio to the bare app (to the mean
of the two runs around it: a shared VM's speed drifts; targets: health and liveness 0.8, job
status 0.5). Then the in-process cost of one request with the Flask test client (ms per request,
log writes included) against a bare app; `--profile` shows where that time goes (cProfile).
"""

import sys
from pathlib import Path

# Run as a script, this file's folder would come first on the path, and the file's name would
# hide the standard library's `http` from every import below (requests, gunicorn, Flask).
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import re  # noqa: E402
import runpy  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import psutil  # noqa: E402
import requests  # noqa: E402

from tests.live_server import LiveServer, free_port, wait_until  # noqa: E402
from tests.pipeline_helpers import Client, png_bytes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-user-key-0123456789"
NO_LIMIT = "100000000 per minute"
TARGETS = {"health": 0.8, "liveness": 0.8, "job status": 0.5}
# The gunicorn.conf.py settings the bare app shares (its hooks start the image2model worker).
SHARED_SETTINGS = ("worker_class", "workers", "threads", "keepalive", "timeout", "max_requests")
BARE_APP = """
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return {"status": "alive", "timestamp": "2024-03-15T10:30:00Z"}
"""


class BareServer:
    """A bare Flask app under gunicorn with the real server's worker settings."""

    def __init__(self, folder, threads):
        self.folder = Path(folder)
        self.port = free_port()
        self.threads = threads
        self.process = None

    def url(self, path):
        """Return the absolute URL of a path on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, timeout=30):
        """Write the app and its config, start gunicorn and wait until it answers."""
        (self.folder / "bare_app.py").write_text(BARE_APP)
        settings = runpy.run_path(str(REPO / "gunicorn.conf.py"))
        settings["threads"] = self.threads
        lines = [f"{name} = {settings[name]!r}" for name in SHARED_SETTINGS]
        lines += [f"bind = '127.0.0.1:{self.port}'", "accesslog = None", "errorlog = '-'"]
        (self.folder / "bare.conf.py").write_text("\n".join(lines) + "\n")
        self._log = open(self.folder / "bare.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.prefix + "/bin/gunicorn", "--config", "bare.conf.py", "bare_app:app"],
            cwd=self.folder,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._answers, timeout, interval=0.1, message="the bare app")
        return self

    def _answers(self):
        if self.process.poll() is not None:
            raise RuntimeError((self.folder / "bare.log").read_text(errors="replace"))
        try:
            return requests.get(self.url("/"), timeout=1).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def stop(self, timeout=30):
        """SIGTERM the process group; SIGKILL it if it outlives `timeout`."""
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()


def worker_process(pid):
    """Return the gunicorn worker below a process (make or gunicorn's master)."""

    def find():
        for proc in psutil.Process(pid).children(recursive=True):
            if not proc.children() and "gunicorn" in " ".join(proc.cmdline()):
                return proc
        return None

    return wait_until(find, 10, message="gunicorn worker")


def cpu_seconds(process):
    """Return the CPU time a process has used so far."""
    times = process.cpu_times()
    return times.user + times.system


def wrk(url, args, worker, headers=(), duration=None):
    """Run wrk on a URL; return `(requests per second, worker CPU ms per request, non-2xx)`."""
    duration = duration or args.duration
    command = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{duration}s"]
    for header in headers:
        command += ["-H", header]
    cpu_before = cpu_seconds(worker)
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    cpu = cpu_seconds(worker) - cpu_before
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    count = int(re.search(r"(\d+) requests in", output).group(1))
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    if errors:
        print(f"    wrk socket errors on {url}: {errors.group(1)}")
    return rate, cpu * 1000 / max(count, 1), int(refused.group(1)) if refused else 0


def server_figures(args, folder):
    """Return `(name, req/s, its ratio to the bare app, worker CPU ms per request, the bare app's
    over it, non-2xx)` of every target and the bare app (medians over the rounds).

    Each round runs the bare app before and after every target and compares the target with
    the mean of its two neighbours: a shared VM's speed drifts. CPU per request drifts less
    than requests per second when other processes take the machine's cores.
    """
    env = {
        "IMAGE2MODEL_API_KEYS": KEY,
        "IMAGE2MODEL_RATELIMIT_DEFAULT": NO_LIMIT,
        "GUNICORN_THREADS": str(args.threads),
    }
    server = LiveServer(Path(folder) / "instance", env=env).start()
    bare = None
    try:
        bare = BareServer(folder, args.threads).start()
        workers = {"bare": worker_process(bare.process.pid)}
        workers["real"] = worker_process(server.process.pid)
        client = Client(server, KEY)
        job = client.upload([("bench.png", png_bytes(1))], model_type="relief")
        assert client.wait_job(job["job_id"], timeout=60)["status"] == "completed"
        auth = (f"Authorization: Bearer {KEY}",)
        targets = [
            ("health", server.url("/api/v1/health/"), ()),
            ("liveness", server.url("/api/v1/health/liveness"), ()),
            ("readiness", server.url("/api/v1/health/readiness"), ()),
            ("job status", server.url(f"/api/v1/models/job/{job['job_id']}"), auth),
        ]
        targets = [target for target in targets if target[0] in args.targets]
        wrk(bare.url("/"), args, workers["bare"], duration=1)  # warm-up
        for _name, url, headers in targets:
            wrk(url, args, workers["real"], headers, duration=1)
        runs = {name: [] for name in ["bare", *(target[0] for target in targets)]}
        ratios = {name: [] for name in runs}
        for _round in range(args.rounds):
            before = wrk(bare.url("/"), args, workers["bare"])
            runs["bare"].append(before)
            for name, url, headers in targets:
                run = wrk(url, args, workers["real"], headers)
                after = wrk(bare.url("/"), args, workers["bare"])
                runs[name].append(run)
                runs["bare"].append(after)
                rate, cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
                ratios[name].append((run[0] / rate, cpu / run[1]))
                before = after
        rows = []
        for name, measured in runs.items():
            rate_ratio, cpu_ratio = (
                (statistics.median(r[i] for r in ratios[name]) for i in (0, 1))
                if ratios[name]
                else (1.0, 1.0)
            )
            rate, cpu = (statistics.median(run[i] for run in measured) for i in (0, 1))
            refused = sum(run[2] for run in measured)
            rows.append((name, rate, rate_ratio, cpu, cpu_ratio, refused))
        return rows
    finally:
        if bare is not None:
            bare.stop()
        server.stop()


def bare_flask_app(folder):
    """Return the bare app, in process."""
    path = Path(folder) / "bare_app.py"
    path.write_text(BARE_APP)
    return runpy.run_path(str(path))["app"]


def real_app(folder):
    """Return the real app on a fresh data folder and a finished relief job's id."""
    from image2model import create_app
    from image2model.pipeline import lifecycle

    app = create_app(
        {
            "INSTANCE_PATH": str(Path(folder) / "inprocess"),
            "API_KEYS": KEY,
            "RATELIMIT_DEFAULT": NO_LIMIT,
            "POOL_SIZE": 1,
        }
    )
    lifecycle.start(app)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {KEY}"}
    response = client.post(
        "/api/v1/upload/",
        data={"model_type": "relief", "files": [(io.BytesIO(png_bytes(1)), "bench.png")]},
        headers=auth,
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    job_id = response.get_json()["job_id"]

    def finished():
        status = client.get(f"/api/v1/models/job/{job_id}", headers=auth)
        return status.get_json()["status"] == "completed"

    wait_until(finished, 60, interval=0.1, message="the in-process relief job")
    return app, job_id


def drain_logs():
    """Wait until every log record so far is written."""
    from image2model.logs import setup as log_setup

    log_setup.flush()


def batch_ms(client, path, headers, count, profiler=None):
    """Return the ms per request of `count` GETs, log writes included."""
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    for _ in range(count):
        client.get(path, headers=headers)
    drain_logs()
    elapsed = time.perf_counter() - started
    if profiler:
        profiler.disable()
    return elapsed * 1000 / count


def inprocess_figures(args, folder):
    """Return `(name, median ms per request, median ratio to the bare app)` of the bare app and
    the real app's endpoints: rounds of one batch each, each batch compared with the round's
    bare one."""

    app, job_id = real_app(folder)
    try:
        auth = {"Authorization": f"Bearer {KEY}"}
        client = app.test_client()
        targets = [
            ("bare", bare_flask_app(folder).test_client(), "/", {}),
            ("health", client, "/api/v1/health/", {}),
            ("liveness", client, "/api/v1/health/liveness", {}),
            ("job status", client, f"/api/v1/models/job/{job_id}", auth),
        ]
        profilers = {name: cProfile.Profile() if args.profile else None for name, *_ in targets}
        for _name, target, path, headers in targets:
            batch_ms(target, path, headers, args.requests // 10)  # warm-up
        times = {name: [] for name, *_ in targets}
        for _round in range(5):
            for name, target, path, headers in targets:
                times[name].append(batch_ms(target, path, headers, args.requests, profilers[name]))
        for name, profiler in profilers.items():
            if profiler:
                print(f"--- profile: {name}")
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return [
            (
                name,
                statistics.median(times[name]),
                statistics.median(
                    ms / bare for ms, bare in zip(times[name], times["bare"], strict=True)
                ),
            )
            for name in times
        ]
    finally:
        from image2model.pipeline import lifecycle

        lifecycle.shutdown(app)


def main():
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="bare, target, bare... rounds")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--threads", type=int, default=64, help="GUNICORN_THREADS of both")
    parser.add_argument("--requests", type=int, default=2000, help="in-process batch size")
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process runs")
    parser.add_argument("--skip-server", action="store_true", help="only the in-process part")
    parser.add_argument("--skip-in-process", action="store_true", help="only the wrk part")
    parser.add_argument(
        "--targets",
        type=lambda text: text.split(","),
        default=["health", "liveness", "readiness", "job status"],
        help="comma-separated endpoints for wrk",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_server:
            print(
                f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s,"
                f" gunicorn gthread 1 worker {args.threads} threads"
            )
            rows = server_figures(args, folder)
            print(
                f"medians of {args.rounds} rounds; ratio: to the bare app (CPU: the bare app's"
                " CPU per request over this one's)"
            )
            print("endpoint       req/s  ratio  CPU ms/req  ratio  target     non-2xx")
            for name, rate, rate_ratio, cpu, cpu_ratio, refused in rows:
                target = TARGETS.get(name)
                mark = "" if target is None else f"{target:.1f} "
                mark += "" if target is None else ("ok" if rate_ratio >= target else "MISSED")
                print(
                    f"{name:12s} {rate:7.0f}  {rate_ratio:5.2f}  {cpu:10.3f}  {cpu_ratio:5.2f}"
                    f"  {mark:10s} {refused}"
                )
        if args.skip_in_process:
            return
        print(f"in process (Flask test client), median of 5 rounds of {args.requests} requests")
        for name, ms, ratio in inprocess_figures(args, folder):
            print(f"{name:12s} {ms:6.3f} ms  {ratio:5.2f} x bare")


if __name__ == "__main__":
    main()
