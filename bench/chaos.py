"""Chaos run: kill -9 the real server at random moments, restart it at once, check the guarantees.

Run by hand: .venv/bin/python bench/chaos.py [--rounds 20] [--seed 1] [--images 6] [--latency 1.5]
One server (`make run`) on one data folder and one FAL stand-in (in this process: the checks read
what it was sent) for the whole run. Each round uploads --images new images (split 1..N per
upload over several uploads) and SIGKILLs the server's whole process group at a moment of one
phase (during the upload request, right after its 201, while submits are in flight, mid-polling,
while results download; every phase once per five rounds, in an order the seed shuffles), then
starts it again on the same folder and port as soon as none of its processes runs. Prints per
round where the kill landed, how long the killed group took to stop running and to be reaped
(which the restart does not wait for; '-' while not seen yet), restart -> liveness, restart ->
work moving again (the first FAL call or change of a generation left unfinished), restart ->
every generation ended, the accepted FAL submits and the files failed because their submit was
cut off (sent, its answer lost: never sent again); then a summary.
Every violation of the guarantees is printed; a good run has none. The logic is tests/chaos.py.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder would come first on the path, and bench/http.py would hide the
# standard library's `http` from requests and everything else.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from tests.chaos import Chaos  # noqa: E402
from tests.fal_standin import FalStandIn  # noqa: E402


def seconds(value):
    """Return a duration for the table, or '-' when there was none."""
    return "    -" if value is None else f"{value:5.2f}"


def main():
    """Run the rounds and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--images", type=int, default=6, help="images uploaded per round")
    parser.add_argument("--latency", type=float, default=1.5, help="FAL's seconds per model")
    parser.add_argument("--bound", type=float, default=60.0, help="seconds for every job to end")
    args = parser.parse_args()
    print(
        f"{args.rounds} rounds, seed {args.seed}, {args.images} images a round, FAL latency"
        f" {args.latency:.2f} s (queue 0.2 s), poll interval 0.1 s, bound {args.bound:.0f} s"
    )
    print(
        "round phase      kill at  dead   reaped  restart recover settle"
        "  answered  submits  cut (unsent)  where the kill landed"
    )
    rounds, started = [], time.monotonic()
    with (
        FalStandIn(latency=args.latency, queue_time=0.2) as fal,
        tempfile.TemporaryDirectory() as folder,
        Chaos(Path(folder), fal, args.seed, images=args.images, bound=args.bound) as chaos,
    ):
        for number, phase in enumerate(chaos.phases(args.rounds), 1):
            result = chaos.run_round(number, phase)
            rounds.append(result)
            reaped = "    -" if result.reaped is None else f"{result.reaped * 1000:4.0f}ms"
            answered = f"{result.answered}/{result.images}"
            print(
                f"{number:5d} {phase:10s} {result.kill_at:5.2f} s {result.dead * 1000:3.0f}ms"
                f" {reaped}  {result.restart:5.2f}   {seconds(result.recover)}"
                f"  {result.settle:5.2f}  {answered:>8s}  {result.submits:7d}"
                f"  {result.interrupted:3d} ({result.unsent})   {result.moment}"
                + ("" if result.port_free else "  (port still bound)")
            )
            for problem in result.problems:
                print(f"      VIOLATION {problem}")
    recoveries = [r.recover for r in rounds if r.recover is not None]
    worst = max(rounds, key=lambda r: -1 if r.recover is None else r.recover)
    images = sum(r.images for r in rounds)
    print(
        f"{len(rounds)} rounds in {time.monotonic() - started:.0f} s; restart -> liveness"
        f" median {statistics.median(r.restart for r in rounds):.2f} s,"
        f" worst {max(r.restart for r in rounds):.2f} s"
    )
    if recoveries:
        print(
            f"time to recover (restart -> work moving again), {len(recoveries)} rounds with work"
            f" left: median {statistics.median(recoveries):.2f} s, worst {max(recoveries):.2f} s"
            f" (round {worst.number}, {worst.phase}: {worst.moment})"
        )
    reaped = [r.reaped for r in rounds if r.reaped is not None]
    print(
        f"killed group stopped running: worst {max(r.dead for r in rounds) * 1000:.0f} ms;"
        f" port bound at a restart: {sum(not r.port_free for r in rounds)} times;"
        f" zombies reaped by init (LiveServer.kill() waits for it, the restart does not):"
        + (
            f" median {statistics.median(reaped) * 1000:.0f} ms, worst {max(reaped) * 1000:.0f} ms"
            if reaped
            else " not seen"
        )
        + f" ({len(rounds) - len(reaped)} rounds not seen yet)"
    )
    print(
        f"images {images}, answered 201 {sum(r.answered for r in rounds)},"
        f" accepted FAL submits {sum(r.submits for r in rounds)},"
        f" failed as interrupted submits {sum(r.interrupted for r in rounds)}"
        f" (of which FAL never accepted {sum(r.unsent for r in rounds)})"
    )
    violations = sum(len(r.problems) for r in rounds)
    print(f"violations: {violations}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
