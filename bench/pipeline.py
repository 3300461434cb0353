"""Benchmark the pipeline: N images through the real server and the FAL stand-in at latency L.

Run by hand: .venv/bin/python bench/pipeline.py [--images 25] [--latency 2] [--poll 0.1]
Starts the FAL stand-in on loopback and the real server (`make run`) on a free port, uploads N
images in one request, waits for the job to complete, and prints the upload time, the time from
upload to completion, its ratio to L (target 1.15), and the server worker's peak memory
(target 120 MB RSS).
"""

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fal_standin import FalStandIn  # noqa: E402
from tests.live_server import wait_until  # noqa: E402
from tests.pipeline_helpers import Client, fal_server, png_bytes  # noqa: E402

TARGET_RATIO = 1.15
TARGET_RSS_MB = 120


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
        stop.wait(0.02)


def main():
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=25)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--poll", type=float, default=0.1, help="FAL_POLL_INTERVAL seconds")
    parser.add_argument("--size", type=int, default=512, help="side of each test image")
    parser.add_argument(
        "--upload",
        default="storage",
        choices=("storage", "inline"),
        help="how images reach FAL (FAL_UPLOAD)",
    )
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as folder,
        FalStandIn(latency=args.latency, queue_time=0.0, queue_ahead=0) as fal,
    ):
        server = fal_server(
            Path(folder),
            fal,
            FAL_POLL_INTERVAL=args.poll,
            MAX_FILES=max(25, args.images),
            FAL_UPLOAD=args.upload,
        ).start()
        try:
            worker = worker_process(server)
            idle_rss = worker.memory_info().rss
            peak, stop = [idle_rss], threading.Event()
            sampler = threading.Thread(target=sample_rss, args=(worker, stop, peak))
            sampler.start()
            client = Client(server)
            images = [
                (f"img-{n:02d}.png", png_bytes(n, (args.size, args.size)))
                for n in range(args.images)
            ]
            started_monotonic = time.monotonic()
            started = time.perf_counter()
            upload = client.upload(images, model_type="tripo3d")
            uploaded = time.perf_counter()
            # The SSE stream pushes the terminal event as soon as the job ends.
            events, _ = client.stream(upload["task_id"], timeout=120 + int(args.latency) * 10)
            finished = time.perf_counter()
            assert events[-1][1]["type"] in ("completed", "error"), events[-1]
            job = client.job(upload["job_id"])
            stop.set()
            sampler.join()
        finally:
            server.stop()

    generation = finished - uploaded
    print(f"images                 {args.images} ({args.size}x{args.size} PNG)")
    print(
        f"FAL latency L          {args.latency:.2f} s   poll interval {args.poll:.2f} s"
        f"   upload via {args.upload}"
    )
    print(f"job status             {job['status']} ({job['completed_files']} completed)")
    print(f"FAL submits            {fal.submit_count}")
    print(f"upload request         {uploaded - started:.3f} s")
    print(f"upload -> completed    {generation:.3f} s")
    print(f"ratio to L             {generation / args.latency:.3f}  (target <= {TARGET_RATIO})")
    at = sorted(submit["at"] for submit in fal.submits)
    print(
        f"submits spread         first {at[0] - started_monotonic:.3f} s,"
        f" last {at[-1] - started_monotonic:.3f} s after the upload began"
    )
    print(
        f"worker RSS idle / peak {idle_rss / 2**20:.1f} / {peak[0] / 2**20:.1f} MB"
        f"  (target < {TARGET_RSS_MB} MB)"
    )


if __name__ == "__main__":
    main()
