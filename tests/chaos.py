"""Chaos rounds: SIGKILL the real server at a chosen moment, restart at once, check the guarantees.

Shared by `bench/chaos.py` (by hand, with figures) and `tests/test_chaos.py` (a short run). One
round uploads images in a thread (1..N files per upload, several uploads), kills the server's
whole process group at a moment of one of PHASES, picked with a seeded random.Random so a run
reproduces, restarts it on the same data folder and port as soon as no thread of the group runs
(a zombie whose threads have all exited holds no port, lock or claim; reaping it is its
parent's business, which a systemd restart does not wait for either), waits until every
generation has ended and checks what `tests/chaos_checks.py` lists.
"""

import dataclasses
import io
import os
import random
import signal
import socket
import threading
import time

import psutil
import requests
from PIL import Image

from tests import chaos_checks
from tests.live_server import LiveServer, wait_until
from tests.pipeline_helpers import USER_KEY, Client, fal_server

PHASES = ("upload", "after_2xx", "submit", "polling", "download")
SMALL_SIDES = (40, 56, 72)
LARGE_SIDE = 640  # about 1.2 MB of noise per PNG: an upload request long enough to land in
HELD = 120.0  # seconds a hung FAL stage holds its answers: longer than any round
# Each held FAL answer holds one of the server's POOL_SIZE (8) pool threads: no more are held.
HELD_AT_MOST = 8


@dataclasses.dataclass
class Round:
    """What one round did and found."""

    number: int
    phase: str
    moment: str = ""  # where the kill landed, in words
    kill_at: float = 0.0  # seconds from the round's first upload to the kill
    dead: float = 0.0  # kill -> no thread of the group runs (zombies count as dead)
    port_free: bool = True  # the port could be bound when the restart began
    reaped: float | None = None  # kill -> the group vanished (its zombies reaped), if seen
    restart: float = 0.0  # restart -> liveness answers
    recover: float | None = None  # restart -> first sign of an unfinished generation moving
    settle: float = 0.0  # restart -> every generation ended
    images: int = 0
    answered: int = 0  # images in uploads answered 201
    submits: int = 0  # FAL submits accepted during the round
    interrupted: int = 0  # files failed with INTERRUPTED_SUBMIT during the round
    unsent: int = 0  # of them, files FAL never accepted (killed between the mark and FAL)
    problems: list = dataclasses.field(default_factory=list)  # new this round


def running(process):
    """Return True while any thread of a process runs.

    A killed process's main thread turns zombie first; its other threads may still be exiting
    then, and they hold its files (the listening socket) until the last one is gone.
    """
    try:
        zombie = process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        return not zombie or process.num_threads() > 1
    except psutil.NoSuchProcess:
        return False


def group_running(pgid):
    """Return the processes of a process group that still run."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and running(process):
                found.append(process)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def port_free(port):
    """Return True if the port can be bound now, as gunicorn binds it (SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class CrashingServer(LiveServer):
    """A LiveServer that can crash and come back on the same port and data folder."""

    def crash(self, figures):
        """SIGKILL the whole group; return once none of its processes runs.

        Records in `figures` (a Round) how long that took and whether the port was free then;
        a thread records when the group vanished (its zombies reaped by init), which
        LiveServer.kill() waits for and a restart need not.
        """
        pgid = self.process.pid
        killed = time.monotonic()
        self.signal(signal.SIGKILL)
        wait_until(lambda: not group_running(pgid), 10, interval=0.002, message="group dead")
        figures.dead = time.monotonic() - killed
        self.process.wait(timeout=5)  # make, our child: reaped here
        self._log_file.close()
        figures.port_free = port_free(self.port)

        def reaped():
            def vanished():
                try:
                    os.killpg(pgid, 0)  # succeeds while a zombie of the group is not reaped
                except ProcessLookupError:
                    return True
                return False

            try:
                wait_until(vanished, 30, interval=0.01)
                figures.reaped = time.monotonic() - killed
            except TimeoutError:
                pass  # left as None: not reaped within 30 s

        threading.Thread(target=reaped, name="chaos-reaped", daemon=True).start()


def noise_png(rng, side):
    """Return a PNG of random pixels: unique bytes, and incompressible, so its size is real."""
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


class Uploads:
    """The round's uploads, sent one after another on a thread, each answer recorded."""

    def __init__(self, server, batches):
        self.server = server
        self.batches = batches  # [[(name, digest, bytes)]]
        self.started = [threading.Event() for _ in batches]
        self.done = [threading.Event() for _ in batches]
        self.answers = [None] * len(batches)  # (status code or None, job id or error)
        self.thread = threading.Thread(target=self._send, name="chaos-uploads", daemon=True)

    def _send(self):
        for index, batch in enumerate(self.batches):
            files = [("files", (name, data, "image/png")) for name, _, data in batch]
            self.started[index].set()
            try:
                response = requests.post(
                    self.server.url("/api/v1/upload/"),
                    headers={"Authorization": f"Bearer {USER_KEY}"},
                    files=files,
                    data={"model_type": "tripo3d"},
                    timeout=60,
                )
                job_id = response.json().get("job_id") if response.status_code == 201 else None
                self.answers[index] = (response.status_code, job_id or response.text[:200])
            except requests.RequestException as error:
                self.answers[index] = (None, type(error).__name__)
            self.done[index].set()

    def all_done(self, timeout):
        """Wait until every upload has its answer."""
        return wait_until(lambda: all(e.is_set() for e in self.done), timeout, message="uploads")


class Chaos:
    """Rounds against one server on one data folder, with one shared FAL stand-in."""

    def __init__(self, folder, fal, seed, images=4, bound=60.0, **config):
        self.fal = fal
        self.rng = random.Random(seed)
        self.images = images
        self.bound = bound
        built = fal_server(folder, fal, MAX_FILES=max(25, images), **config)
        self.server = CrashingServer(built.instance_path, env=built.extra_env)
        self.instance_path = str(self.server.instance_path)
        self.client = Client(self.server)
        self.sent = {}  # digest -> name of every image uploaded
        self.acknowledged = {}  # job id -> digests of an upload answered 201
        self.problems = set()
        self.interrupted = 0
        self.unsent = 0
        self.restarted_at = None  # monotonic time of the last restart

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc_info):
        self.server.stop()

    def phases(self, rounds):
        """Return the phase of each round: every phase once per five rounds, shuffled."""
        order = []
        while len(order) < rounds:
            block = list(PHASES)
            self.rng.shuffle(block)
            order += block
        return order[:rounds]

    def plan(self, phase):
        """Return this round's uploads: the images split 1..N per upload, each image unique."""
        count, batches = self.images, []
        while count:
            size = self.rng.randint(1, count)
            batches.append(size)
            count -= size
        large = phase == "upload"
        planned = []
        for number, size in enumerate(batches):
            # The upload a kill lands in is the last one, of large images: a request to hit.
            last = large and number == len(batches) - 1
            batch = []
            for _ in range(size):
                data = noise_png(self.rng, LARGE_SIDE if last else self.rng.choice(SMALL_SIDES))
                name = f"img-{len(self.sent):03d}.png"
                self.sent[chaos_checks.digest(data)] = name
                batch.append((name, chaos_checks.digest(data), data))
            planned.append(batch)
        return planned

    def run_round(self, number, phase):
        """Run one round; return its Round."""
        figures = Round(number, phase)
        batches = self.plan(phase)
        figures.images = sum(len(batch) for batch in batches)
        submits_before = self.fal.submit_count
        arrivals_before = len(self.fal.arrivals)
        uploads = Uploads(self.server, batches)
        moment = getattr(self, f"arm_{phase}")()
        began = time.monotonic()
        uploads.thread.start()
        try:
            figures.moment = moment(uploads, submits_before, arrivals_before)
            missed = []
        except TimeoutError as error:  # the server stalled before the moment: killed anyway
            figures.moment = f"moment not reached: {error}"
            missed = [f"round {number}, {phase}: {figures.moment}"]
        figures.kill_at = time.monotonic() - began
        self.server.crash(figures)
        self.fal.clear_faults()  # the held answers go to a dead server
        stalled = missed + self.restart(figures)
        uploads.all_done(self.bound)
        for (status, answer), batch in zip(uploads.answers, batches, strict=True):
            if status == 201:
                self.acknowledged[answer] = [digest for _, digest, _ in batch]
                figures.answered += len(batch)
        self.settle(figures)
        problems, counts = chaos_checks.check(
            self.instance_path, self.fal, self.sent, self.acknowledged, self.client
        )
        figures.problems = stalled + [p for p in problems if p not in self.problems]
        self.problems.update(problems)
        figures.submits = self.fal.submit_count - submits_before
        figures.interrupted = counts["interrupted"] - self.interrupted
        figures.unsent = counts["unsent"] - self.unsent
        self.interrupted, self.unsent = counts["interrupted"], counts["unsent"]
        return figures

    # The kill moments: arm_<phase> sets faults up and returns the wait for the moment.

    def arm_upload(self):
        """During the last upload's request: a random moment, or while its files are stored."""
        while_storing = self.rng.random() < 0.5
        share = self.rng.random()  # of the time the request or the storing takes
        uploads_dir = os.path.join(self.instance_path, "uploads")

        def listing():
            return set(os.listdir(uploads_dir)) if os.path.isdir(uploads_dir) else set()

        def moment(uploads, _submits, _arrivals):
            last = len(uploads.batches) - 1
            wait_until(uploads.started[last].is_set, 30, message="the last upload to start")
            if while_storing:
                before = listing()
                wait_until(
                    lambda: listing() - before or uploads.done[last].is_set(),
                    30,
                    interval=0.001,
                    message="the upload's files to appear",
                )
            # Measured on a 2-core VM: a request of n large images takes about 20 + 20 n ms, from
            # its first file on disk to its answer about 5 + 7 n ms.
            files = len(uploads.batches[last])
            delay = share * (0.005 + 0.007 * files if while_storing else 0.02 + 0.02 * files)
            answered = uploads.done[last].wait(delay)
            where = "while its files are stored" if while_storing else "in the request"
            late = ", after its answer" if answered else ""
            return (
                f"upload {last + 1}/{len(uploads.batches)} ({files} large) {where}"
                f" +{delay * 1000:.0f} ms{late}"
            )

        return moment

    def arm_after_2xx(self):
        """Right after the last upload's 201."""
        delay = self.rng.uniform(0.0, 0.05)

        def moment(uploads, _submits, _arrivals):
            uploads.all_done(30)
            time.sleep(delay)  # the chosen moment, not a wait for something
            return f"{delay * 1000:.0f} ms after the last answer"

        return moment

    def arm_submit(self):
        """After the k-th accepted submit, its answer held by FAL or on its way."""
        held = self.rng.random() < 0.5
        k = self.rng.randint(1, min(self.images, HELD_AT_MOST))
        if held:
            self.fal.hang("submit", HELD)

        def moment(uploads, submits, _arrivals):
            self.fal.wait_for(lambda: self.fal.submit_count >= submits + k, timeout=30)
            how = "answers held" if held else "answers flowing"
            return f"after submit {k}/{self.images} accepted ({how})"

        return moment

    def arm_polling(self):
        """While FAL works: a random moment after every image was submitted."""
        delay = self.rng.uniform(0.05, 0.8 * self.fal.latency)

        def moment(uploads, submits, _arrivals):
            count = submits + self.images
            self.fal.wait_for(lambda: self.fal.submit_count >= count, timeout=30)
            time.sleep(delay)  # the chosen moment
            return f"polling, {delay * 1000:.0f} ms after the last submit"

        return moment

    def arm_download(self):
        """While results download: the k-th result or file download held by FAL."""
        stage = self.rng.choice(("result", "download"))
        k = self.rng.randint(1, min(self.images, HELD_AT_MOST))
        self.fal.hang(stage, HELD)

        def moment(uploads, _submits, arrivals):
            def reached():
                seen = self.fal.arrivals[arrivals:]
                return sum(1 for call in seen if call["stage"] == stage) >= k

            self.fal.wait_for(reached, timeout=30)
            what = "result fetch" if stage == "result" else "file download"
            return f"{what} {k}/{self.images} held"

        return moment

    # After the kill

    def restart(self, figures):
        """Start the server again at once; measure until liveness and until work moves.

        Returns the problem found, if any: no unfinished generation moved within the bound.
        """
        waiting = chaos_checks.unfinished(self.instance_path)
        connections = self.fal.connections_opened
        started = time.monotonic()
        found = {}

        def moved():
            # A FAL call on a connection the new server opened, or a change in the database.
            for call in self.fal.arrivals[::-1]:
                if call["at"] < started:
                    break
                if call["connection"] > connections:
                    found["at"] = call["at"]
            try:
                now = chaos_checks.unfinished(self.instance_path)
            except chaos_checks.sqlite3.Error:
                return bool(found)
            if any(now.get(id_) != fields for id_, fields in waiting.items()):
                found["at"] = min(found.get("at", time.monotonic()), time.monotonic())
            return bool(found)

        watcher = None
        if waiting:

            def watch():
                try:
                    wait_until(moved, self.bound, interval=0.01)
                except TimeoutError:
                    pass

            watcher = threading.Thread(target=watch, name="chaos-recover", daemon=True)
            watcher.start()
        self.server.start()
        self.restarted_at = started
        figures.restart = time.monotonic() - started
        if watcher is None:
            return []
        watcher.join(self.bound)
        if "at" not in found:
            return [f"round {figures.number}: no unfinished generation moved after the restart"]
        figures.recover = found["at"] - started
        return []

    def settle(self, figures):
        """Wait until every generation has ended, within the bound from the restart."""
        try:
            wait_until(
                lambda: not chaos_checks.unfinished(self.instance_path),
                self.bound - (time.monotonic() - self.restarted_at),
                interval=0.05,
                message="every generation to end",
            )
        except TimeoutError:
            pass  # the check names every generation that did not end
        figures.settle = time.monotonic() - self.restarted_at
