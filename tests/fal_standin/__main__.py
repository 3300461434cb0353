"""Run the stand-in until Ctrl-C: python -m tests.fal_standin --port 0 --latency 2 [--key K]."""

import argparse
import logging
import shlex
import signal
import sys
import threading

from .server import FalStandIn


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in, print the client settings, and wait for Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.fal_standin", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--latency", type=float, default=2.0, help="processing seconds")
    parser.add_argument("--key", default="test-fal-key", help="the FAL_KEY clients must send")
    parser.add_argument("--concurrency", type=int, default=None, help="requests running at once")
    parser.add_argument("--queue-time", type=float, default=None, help="seconds IN_QUEUE")
    parser.add_argument("--ca-dir", default=None, help="where to write the CA file")
    parser.add_argument("--verbose", action="store_true", help="log every call")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    # SIGTERM (from a benchmark script) ends the wait like Ctrl-C, so stop() cleans up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    standin = FalStandIn(
        key=args.key,
        latency=args.latency,
        port=args.port,
        concurrency=args.concurrency,
        queue_time=args.queue_time,
        ca_dir=args.ca_dir,
    )
    with standin:
        for name, value in standin.env().items():
            print(f"export {name}={shlex.quote(value)}")
        print(
            "# in the client process: "
            f"fal_client.client.REST_URL = fal_client.client.CDN_URL = {standin.base_url!r}"
        )
        print("# serving; Ctrl-C to stop", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
