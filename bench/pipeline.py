"""Benchmark the pipeline: N images through the real server and the FAL stand-in at latency L.

Run by hand: .venv/bin/python bench/pipeline.py [--images 25] [--latency 2] [--poll 0.1] [--runs 5]
Starts the FAL stand-in in a process of its own (FAL is another machine: it must not share an
interpreter with the measuring client) and, for every run, the real server (`make run`) on a
fresh data folder. Each run uploads N images in one request and reads the job's event stream
to its terminal event. Prints per run the machine's speed (a reference loop:
a shared VM's drifts, and every figure with it), the upload time, the time from upload to
completion, its ratio to L (target 1.15), the CPU the worker and the stand-in used (they share
this machine's cores), the status polls FAL answered and where the time went; then the median
ratio and the worker's peak memory (target 120 MB RSS). `--pool` sets POOL_SIZE, `--in-flight`
MAX_FAL_IN_FLIGHT.

The scale run at real FAL latency (targets: <= 20 ms of worker CPU per generation, RSS <= 150 MB,
done within 1.1 x L):
  .venv/bin/python bench/pipeline.py --images 500 --latency 60 --poll 1 --in-flight 500 \
      --size 128 --runs 1
"""

import argparse
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

# The repository instead of bench/ itself, whose http.py would hide the standard library's.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from tests.fal_standin import FalStandIn  # noqa: E402
from tests.live_server import wait_until  # noqa: E402
from tests.pipeline_helpers import Client, fal_server, png_bytes  # noqa: E402

TARGET_RATIO = 1.15
TARGET_RSS_MB = 120


class StandInProcess:
    """The FAL stand-in served from a child process; its submissions are read back on stop."""

    def __init__(self, latency):
        self.latency = latency
        self._pipe, child_end = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=serve_stand_in, args=(child_end, latency), daemon=True
        )

    def __enter__(self):
        self._process.start()
        self.env, self.base_url = self._pipe.recv()
        return self

    def cpu_seconds(self):
        """Return the CPU time the stand-in's process has used so far."""
        times = psutil.Process(self._process.pid).cpu_times()
        return times.user + times.system

    def submits(self):
        """Return the submissions the stand-in accepted so far (request_id, at: wall clock)."""
        self._pipe.send("submits")
        return self._pipe.recv()

    def status_calls(self):
        """Return how many status polls the stand-in answered so far."""
        self._pipe.send("status_calls")
        return self._pipe.recv()

    def __exit__(self, *exc_info):
        self._pipe.send("stop")
        self._process.join(timeout=30)


def serve_stand_in(pipe, latency):
    """Run a stand-in until told to stop, answering requests for its submissions."""
    with FalStandIn(latency=latency, queue_time=0.0, queue_ahead=0) as fal:
        wall_offset = time.time() - time.monotonic()
        pipe.send((fal.env(), fal.base_url))
        while (message := pipe.recv()) != "stop":
            if message == "submits":
                pipe.send([{**s, "at": s["at"] + wall_offset} for s in fal.submits])
            elif message == "status_calls":
                pipe.send(fal.status_calls)


class StandInView:
    """The few stand-in facts fal_server() needs, for a stand-in in another process."""

    def __init__(self, standin):
        self.base_url = standin.base_url
        self._env = standin.env

    def env(self):
        """Return the client environment of the stand-in."""
        return dict(self._env)


def worker_process(server):
    """Return the gunicorn worker process (the child of the master) of a live server."""
    make = psutil.Process(server.process.pid)

    def find():
        for proc in make.children(recursive=True):
            if proc.children() == [] and "gunicorn" in " ".join(proc.cmdline()):
                return proc
        return None

    return wait_until(find, 10, message="gunicorn worker")


def sample_rss(process, stop, peak):
    """Record the highest RSS of a process until `stop` is set."""
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], process.memory_info().rss)
        except psutil.NoSuchProcess:
            return
        stop.wait(0.05)


def reference_loop_ms():
    """Time a fixed pure-Python loop: this machine's speed now (a shared VM's drifts)."""
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for number in range(1_000_000):
            total += number
        best = min(best, time.perf_counter() - started)
    return best * 1000


def one_run(args, standin, images):
    """Run one job through a fresh server; return its figures."""
    with tempfile.TemporaryDirectory() as folder:
        server = fal_server(
            Path(folder),
            StandInView(standin),
            FAL_POLL_INTERVAL=args.poll,
            MAX_FILES=max(25, args.images),
            FAL_UPLOAD=args.upload,
            POOL_SIZE=args.pool,
            MAX_FAL_IN_FLIGHT=args.in_flight,
        ).start()
        try:
            worker = worker_process(server)
            peak, stop = [worker.memory_info().rss], threading.Event()
            sampler = threading.Thread(target=sample_rss, args=(worker, stop, peak))
            sampler.start()
            client = Client(server)
            cpu_before, standin_cpu_before = worker.cpu_times(), standin.cpu_seconds()
            polls_before = standin.status_calls()
            started = time.perf_counter()
            upload = client.upload(images, model_type="tripo3d")
            uploaded, uploaded_wall = time.perf_counter(), time.time()
            # The event stream pushes the terminal event as soon as the job ends.
            stream_timeout = 120 + int(args.latency) * 10 + args.images
            events, _ = client.stream(upload["task_id"], timeout=stream_timeout)
            finished = time.perf_counter()
            cpu_after, standin_cpu_after = worker.cpu_times(), standin.cpu_seconds()
            polls = standin.status_calls() - polls_before
            stop.set()
            sampler.join()
            job = client.job(upload["job_id"])
            database = sqlite3.connect(server.instance_path / "image2model.sqlite3")
            stamps = database.execute(
                "SELECT fal_request_id, downloading_at, finished_at FROM generations"
                " WHERE job_id = ?",
                (upload["job_id"],),
            ).fetchall()
            database.close()
        finally:
            server.stop()
    assert events[-1][1]["type"] == "completed", events[-1]
    submitted_at = {s["request_id"]: s["at"] - uploaded_wall for s in standin.submits()}
    # The file stored last, and the moments of its path: accepted, done at FAL, seen, stored.
    request_id, seen, stored = max(stamps, key=lambda stamp: stamp[2])
    accepted = submitted_at[request_id]
    submitted = sorted(submitted_at[stamp[0]] for stamp in stamps)
    return {
        "last_path": (
            accepted,
            accepted + args.latency,
            seen - uploaded_wall,
            stored - uploaded_wall,
        ),
        "status": f"{job['status']} {job['completed_files']}",
        "upload": uploaded - started,
        "generation": finished - uploaded,
        "first_submit": submitted[0],
        "last_submit": submitted[-1],
        "downloads": max(done - downloading for _, downloading, done in stamps),
        "rss_mb": peak[0] / 2**20,
        "cpu": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
        "standin_cpu": standin_cpu_after - standin_cpu_before,
        "polls": polls,
        "cpu_user": cpu_after.user - cpu_before.user,
    }


def main():
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=25)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--poll", type=float, default=0.1, help="FAL_POLL_INTERVAL seconds")
    parser.add_argument("--size", type=int, default=512, help="side of each test image")
    parser.add_argument("--runs", type=int, default=5, help="jobs, each on a fresh server")
    parser.add_argument("--pool", type=int, default=8, help="POOL_SIZE: worker pool threads")
    parser.add_argument("--in-flight", type=int, default=32, help="MAX_FAL_IN_FLIGHT")
    parser.add_argument(
        "--upload",
        default="storage",
        choices=("storage", "inline"),
        help="how images reach FAL (FAL_UPLOAD)",
    )
    args = parser.parse_args()
    images = [
        (f"img-{n:02d}.png", png_bytes(n, (args.size, args.size))) for n in range(args.images)
    ]
    print(
        f"{args.images} images ({args.size}x{args.size} PNG), FAL latency L {args.latency:.2f} s,"
        f" poll interval {args.poll:.2f} s, upload via {args.upload}, pool {args.pool},"
        f" {args.runs} runs"
    )
    print(
        "run  loop   status       upload  ->completed  ratio  CPU: worker (user), FAL  polls"
        "  submits from..to"
        "  downloads  last file: accepted, done at FAL, seen, stored"
    )
    results = []
    with StandInProcess(args.latency) as standin:
        for number in range(1, args.runs + 1):
            loop_ms = reference_loop_ms()
            result = one_run(args, standin, images)
            results.append(result)
            print(
                f"{number:3d}  {loop_ms:3.0f}ms  {result['status']:11s}  {result['upload']:.3f}"
                f"   {result['generation']:.3f} s   {result['generation'] / args.latency:.3f}"
                f"  {result['cpu']:.2f} s ({result['cpu_user']:.2f}), {result['standin_cpu']:.2f} s"
                f"  {result['polls']:5d}  {result['first_submit']:.3f}"
                f"..{result['last_submit']:.3f} s"
                f"  {result['downloads']:.3f} s  "
                + ", ".join(f"{moment:.3f}" for moment in result["last_path"])
            )
    ratios = [r["generation"] / args.latency for r in results]
    print(
        f"ratio to L: median {statistics.median(ratios):.3f}, best {min(ratios):.3f},"
        f" worst {max(ratios):.3f}  (target <= {TARGET_RATIO})"
    )
    print(
        f"worker RSS peak {max(r['rss_mb'] for r in results):.1f} MB  (target < {TARGET_RSS_MB} MB)"
    )
    cpu_ms = [r["cpu"] / args.images * 1000 for r in results]
    print(
        f"worker CPU per generation: median {statistics.median(cpu_ms):.1f} ms,"
        f" worst {max(cpu_ms):.1f} ms"
    )


if __name__ == "__main__":
    main()
