"""What a process killed mid-write leaves in the data folder is removed when the next one starts."""

import os
import select
import signal
import subprocess
import sys
import textwrap

import psutil

from image2model import processes
from image2model.pipeline import lifecycle
from tests import images
from tests.live_server import REPO, wait_until

# Stores an upload in a process of its own and stops it for good once the files are written,
# before their rows are committed: where a kill -9 leaves files no row owns.
STORE_AND_HANG = textwrap.dedent(
    """
    import io, sys, threading, types
    from werkzeug.datastructures import FileStorage
    from image2model import create_app
    from image2model.store import jobs
    from image2model.files import uploads

    def hang(*args, **kwargs):
        print("stored", flush=True)
        threading.Event().wait()

    app = create_app({"INSTANCE_PATH": sys.argv[1], "POOL_SIZE": 0, "TESTING": True})
    jobs.insert_job = hang
    with open(sys.argv[2], "rb") as handle:
        data = handle.read()
    files = [FileStorage(stream=io.BytesIO(data), filename="a.png")]
    with app.app_context():
        facts = uploads.check_all(files, app.config)
        owner = types.SimpleNamespace(owner="someone")
        uploads.store_batch(app, owner, files, facts, "relief", {})
    """
)


def entries(path):
    """Return the names in a folder, sorted."""
    return sorted(os.listdir(path))


def dead_pid():
    """Return the pid of a process that ran and is gone (reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def dead_owner():
    """Return the claim owner string of a process of this host that is gone."""
    host = processes.worker_identity().split(":", 1)[0]
    return f"{host}:{dead_pid()}:1.000"


def test_an_upload_killed_while_it_is_stored_is_removed_at_the_next_start(app, tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(images.png())
    child = subprocess.Popen(
        [sys.executable, "-c", STORE_AND_HANG, app.instance_path, str(image)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert select.select([child.stdout], [], [], 30)[0], "the upload was not stored in 30 s"
        assert child.stdout.readline().strip() == "stored"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    uploads_dir = os.path.join(app.instance_path, "uploads")
    left = entries(uploads_dir)
    batch_dirs = [name for name in left if not name.startswith(".")]
    assert len(batch_dirs) == 1 and len(entries(os.path.join(uploads_dir, batch_dirs[0]))) == 1

    lifecycle.remove_interrupted_writes(app)
    assert entries(uploads_dir) == []


def test_a_batch_recorded_before_its_writer_died_keeps_its_files(app, client):
    body = images.uploaded(client, [("a.png", images.png())])
    uploads_dir = os.path.join(app.instance_path, "uploads")
    assert entries(uploads_dir) == [body["batch_id"]]  # no mark once stored
    mark = os.path.join(uploads_dir, f".{body['batch_id']}@{dead_owner()}.storing")
    open(mark, "xb").close()

    lifecycle.remove_interrupted_writes(app)
    assert entries(uploads_dir) == [body["batch_id"]]
    assert len(entries(os.path.join(uploads_dir, body["batch_id"]))) == 1


def test_an_upload_a_live_process_is_storing_is_left_alone(app):
    uploads_dir = os.path.join(app.instance_path, "uploads")
    os.makedirs(os.path.join(uploads_dir, "batch_live"))
    open(os.path.join(uploads_dir, "batch_live", "file_a.png"), "xb").close()
    mark = f".batch_live@{processes.worker_identity()}.storing"
    open(os.path.join(uploads_dir, mark), "xb").close()

    lifecycle.remove_interrupted_writes(app)
    assert entries(uploads_dir) == [mark, "batch_live"]
    assert entries(os.path.join(uploads_dir, "batch_live")) == ["file_a.png"]


def test_a_half_written_result_of_a_dead_process_goes_and_a_live_ones_stays(app):
    job_dir = os.path.join(app.instance_path, "results", "job_x")
    os.makedirs(job_dir)
    names = [
        f".chair.glb.{dead_pid()}.7f00aa.part",
        f".chair.webp.{os.getpid()}.7f00bb.part",
        "chair.glb",
        "notes.part",
    ]
    for name in names:
        open(os.path.join(job_dir, name), "xb").close()

    lifecycle.remove_interrupted_writes(app)
    assert entries(job_dir) == sorted(names[1:])


def test_a_zombie_writer_is_dead():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not processes.process_is_dead(child.pid)
        child.kill()
        wait_until(
            lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 10, message="zombie"
        )
        assert processes.process_is_dead(child.pid)
    finally:
        child.kill()
        child.wait()
