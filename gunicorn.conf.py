"""gunicorn settings: one gthread worker with many threads (SSE streams hold one each)."""

import os
import signal
import threading

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
# One process: the worker pool, the event notifications and the rate-limit store live in it.
workers = 1
threads = int(os.environ.get("GUNICORN_THREADS", "64"))
# The app (and its pool threads) must be created in the worker, after fork.
preload_app = False
max_requests = 0
timeout = 60
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# No shared control socket in $HOME: several instances may run on one machine.
control_socket_disable = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


def post_worker_init(worker):
    """Answer unparsable requests in the API's envelope, keep secrets out of gunicorn's log, on
    SIGTERM, SIGINT or SIGQUIT first tell the app to stop (ending SSE streams) so the exit can
    be orderly, and start the dispatcher and retention, which only the server runs."""
    from gunicorn import util

    from image2model.errors import write_server_error
    from image2model.logs.setup import redact_server_log
    from image2model.pipeline import lifecycle

    util.write_error = write_server_error
    # It logs refused requests with the offending text, which may be a client's key.
    redact_server_log(worker.wsgi, worker.log.error_log)
    read_end, write_end = os.pipe()

    def tell_the_app():
        os.read(read_end, 1)
        from image2model.pipeline.lifecycle import begin_shutdown

        begin_shutdown(worker.wsgi)

    threading.Thread(target=tell_the_app, name="image2model-sigterm", daemon=True).start()

    def ignore(signum, frame):
        """Take a stop signal that came after the first, and do nothing."""

    def stopping(previous):
        """Wrap gunicorn's handler of a stop signal: tell the app first."""

        def on_stop(signum, frame):
            # A handler takes no lock: it runs in the main thread between two bytecodes, maybe
            # inside a lock it would wait for, or inside itself (the master and a process-group
            # kill both send one). A byte down a pipe hands the work to a thread of its own.
            os.write(write_end, b"\0")
            if signum != signal.SIGTERM:
                # Ctrl-C reaches the worker twice (SIGINT from the terminal, SIGQUIT from the
                # master): a second exit raised inside the first's cleanup would skip the
                # worker_exit hook, and with it the pool's orderly stop.
                # A no-op, not SIG_IGN: Python raises for a signal already pending whose
                # handler became SIG_IGN ("ignored due to race condition").
                signal.signal(signal.SIGINT, ignore)
                signal.signal(signal.SIGQUIT, ignore)
            if callable(previous):
                previous(signum, frame)

        return on_stop

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, stopping(signal.getsignal(signum)))
    # Only the server dispatches: the app alone (a CLI command, a shell) claims no work.
    lifecycle.start(worker.wsgi)


def worker_exit(server, worker):
    """Stop the app's worker pool so in-flight state is left resumable."""
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        from image2model.pipeline.lifecycle import shutdown

        shutdown(app)
