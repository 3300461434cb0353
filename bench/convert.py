"""Benchmark downloads over HTTP: a 100k-face textured GLB as GLB, OBJ zip, PLY and STL.

Run by hand: .venv/bin/python bench/convert.py [--runs N] [--cached-runs M] [--texture png|jpeg]

It starts the real server (`make run` through tests.live_server.LiveServer) on a temporary instance,
uploads a small image as a `relief` job and waits for it to complete, then replaces that job's GLB
with the benchmark model (100,000 triangles, UVs, normals, a 2048×2048 texture) and deletes any
conversion cache. Placing the model through a real job keeps every row as the server wrote it.

For each format it times, over HTTP with the body read to the end: the first request (conversion
and store; the cache is deleted before each of the N runs) and the cached request (median of M),
and prints each median with its ratio to the targets: first ≤ 0.5 s, cached ≤ 20 ms. For reference
it also times `convert_glb` alone, in this process.
"""

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import trimesh
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from image2model.models3d.convert import FORMATS, convert_glb, verify_glb  # noqa: E402
from tests.live_server import LiveServer, wait_until  # noqa: E402

FIRST_TARGET = 0.5
CACHED_TARGET = 0.020
KEY = "bench-key-0123456789abcdef"
TEXTURE_SIDE = 2048
# 251 × 201 grid vertices: 250 × 200 cells of two triangles each
COLUMNS, ROWS = 250, 200


def texture(image_format):
    """Return a photo-like 2048² texture: smooth colour fields, detail and noise."""
    rng = np.random.default_rng(5)
    coarse = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((TEXTURE_SIDE, TEXTURE_SIDE), Image.BICUBIC)
    image = image.filter(ImageFilter.GaussianBlur(4))
    noise = rng.normal(0, 8, (TEXTURE_SIDE, TEXTURE_SIDE, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format=image_format, quality=90)
    encoded.seek(0)
    return Image.open(encoded)


def benchmark_glb(image_format):
    """Return the bytes of a textured, bumpy closed-ish shell of exactly 100,000 triangles."""
    u, v = np.meshgrid(np.linspace(0, 1, COLUMNS + 1), np.linspace(0, 1, ROWS + 1))
    angle, height = u * 2 * np.pi, v
    radius = 0.3 + 0.02 * np.sin(angle * 12) * np.cos(height * 20)
    vertices = np.column_stack(
        [(radius * np.cos(angle)).ravel(), height.ravel(), (radius * np.sin(angle)).ravel()]
    )
    index = np.arange((ROWS + 1) * (COLUMNS + 1)).reshape(ROWS + 1, COLUMNS + 1)
    a, b = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    c, d = index[1:, :-1].ravel(), index[1:, 1:].ravel()
    faces = np.concatenate([np.column_stack([a, c, b]), np.column_stack([b, c, d])])
    uv = np.column_stack([u.ravel(), v.ravel()])
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=texture(image_format))
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    # normals stored in the GLB, as a generator's have them (trimesh's own need scipy)
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], face_normals)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    mesh = trimesh.Trimesh(vertices, faces, vertex_normals=normals, visual=visual, process=False)
    return mesh.export(file_type="glb")


def tiny_png():
    """Return a small image for the relief job that only serves to create the rows."""
    encoded = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8)).save(encoded, format="PNG")
    return encoded.getvalue()


def completed_job(server, session):
    """Upload an image as a relief job, wait for it, and return (job_id, results folder)."""
    response = session.post(
        server.url("/api/v1/upload/"),
        files={"files": ("bench.png", tiny_png(), "image/png")},
        data={"model_type": "relief", "face_limit": "1000"},
        timeout=30,
    )
    response.raise_for_status()
    job_id = response.json()["job_id"]

    def done():
        status = session.get(server.url(f"/api/v1/models/job/{job_id}"), timeout=10).json()
        if status["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"the relief job ended {status['status']}: {status}")
        return status["status"] == "completed"

    wait_until(done, 60, interval=0.05, message="the relief job")
    return job_id, server.instance_path / "results" / job_id


def timed_get(session, url):
    """GET url, read the whole body, and return (seconds, bytes)."""
    start = time.perf_counter()
    # one read of the raw body: requests' own 10 kB chunks would add ~10 ms on 11 MB
    with session.get(url, timeout=120, stream=True) as response:
        body = response.raw.read()
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}: {body[:300]!r}")
    return seconds, body


def convert_alone(glb_path, fmt, runs):
    """Return the median seconds of convert_glb into memory, in this process."""
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        convert_glb(glb_path, fmt, io.BytesIO(), name="bench")
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="first requests per format")
    parser.add_argument("--cached-runs", type=int, default=15, help="cached requests per format")
    parser.add_argument("--texture", choices=("png", "jpeg"), default="png")
    arguments = parser.parse_args()

    glb_bytes = benchmark_glb(arguments.texture.upper())
    with tempfile.TemporaryDirectory() as folder:
        glb_path = Path(folder) / "bench.glb"
        glb_path.write_bytes(glb_bytes)
        summary = verify_glb(glb_path)
        env = {"IMAGE2MODEL_API_KEYS": KEY, "IMAGE2MODEL_RATELIMIT_DEFAULT": "100000 per minute"}
        server = LiveServer(Path(folder) / "instance", env=env).start()
        try:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {KEY}"
            job_id, results = completed_job(server, session)
            url = server.url(f"/api/v1/models/download/{job_id}")
            for fmt in FORMATS:  # warm up imports and first-use costs on the relief model
                timed_get(session, f"{url}?format={fmt}")
            stored_glb = next(results.glob("*.glb"))
            shutil.copyfile(glb_path, stored_glb)
            rows = []
            for fmt in FORMATS:
                firsts = []
                for _ in range(arguments.runs):
                    shutil.rmtree(results / ".cache", ignore_errors=True)
                    seconds, body = timed_get(session, f"{url}?format={fmt}")
                    firsts.append(seconds)
                cached = [
                    timed_get(session, f"{url}?format={fmt}")[0]
                    for _ in range(arguments.cached_runs)
                ]
                alone = convert_alone(glb_path, fmt, 3) if fmt != "glb" else 0.0
                rows.append(
                    (fmt, len(body), statistics.median(firsts), statistics.median(cached), alone)
                )
        finally:
            server.stop()

    print(
        f"model      {summary.faces:,} faces, {summary.vertices:,} vertices, "
        f"{TEXTURE_SIDE}² {arguments.texture.upper()} texture, GLB {len(glb_bytes) / 1e6:.2f} MB"
    )
    print(
        f"runs       first: median of {arguments.runs}, cached: median of {arguments.cached_runs}"
    )
    print(
        f"{'format':<7}{'size MB':>9}{'first s':>10}{'/0.5 s':>8}"
        f"{'cached ms':>11}{'/20 ms':>8}{'convert_glb s':>15}"
    )
    for fmt, size, first, cached, alone in rows:
        print(
            f"{fmt:<7}{size / 1e6:>9.2f}{first:>10.3f}{first / FIRST_TARGET:>8.2f}"
            f"{cached * 1000:>11.1f}{cached / CACHED_TARGET:>8.2f}{alone:>15.3f}"
        )


if __name__ == "__main__":
    main()
