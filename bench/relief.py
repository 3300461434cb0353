"""Benchmark the relief generator: a 1024×1024 photo to a 100k-face GLB and preview.

Run by hand: .venv/bin/python bench/relief.py [--runs N] [--side 6300 --format png]
(--side scales the photo up; a large PNG cannot decode scaled, as a JPEG does.)
Prints the median wall time of N runs, its ratio to the 0.5 s target, the time per stage, and the
peak memory of one run (tracemalloc's peak, which misses Pillow's own buffers, and the growth of
the peak RSS of a fresh process over its RSS before the build).
"""

import argparse
import io
import multiprocessing
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image, ImageDraw, ImageFilter

from image2model.generators.relief import ReliefOptions, build_relief
from image2model.models3d.render import render_preview

TARGET_SECONDS = 0.5
SIDE = 1024


def photo_like(path: Path, side: int = SIDE) -> Path:
    """Write a deterministic photo-like image (format from the suffix): soft gradients, shapes,
    blur and sensor noise, made at SIDE pixels and scaled to `side`."""
    rows, cols = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    sky = np.stack([0.3 + 0.5 * rows, 0.5 + 0.3 * cols, 0.9 - 0.4 * rows], axis=-1)
    image = Image.fromarray((sky * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    shapes = np.random.default_rng(2024)
    for _ in range(40):
        x, y = shapes.integers(0, SIDE, 2)
        radius = int(shapes.integers(20, 160))
        colour = tuple(int(c) for c in shapes.integers(0, 256, 3))
        box = (x - radius, y - radius, x + radius, y + radius)
        if shapes.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(3))
    noise = np.random.default_rng(7).normal(0, 6, (SIDE, SIDE, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if side != SIDE:
        image = image.resize((side, side), Image.Resampling.BICUBIC)
    image.save(path, quality=92)
    return path


def status_kib(field: str) -> int:
    """Return a memory figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_growth_of_one_build(path: Path, options: ReliefOptions) -> int:
    """Build once in this (fresh) process; return its peak RSS over its RSS before, in KiB."""
    before = status_kib("VmRSS")
    build_relief(path, options)
    return status_kib("VmHWM") - before


def timed_run(path: Path, options: ReliefOptions):
    """Build once; return the result, the wall time and the seconds spent in each stage."""
    marks = []
    start = time.perf_counter()
    result = build_relief(
        path, options, lambda percent, message: marks.append((message, time.perf_counter()))
    )
    end = time.perf_counter()
    names = [message for message, _ in marks]
    stamps = [stamp for _, stamp in marks] + [end]
    return result, end - start, dict(zip(names, np.diff(stamps), strict=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--face-limit", type=int, default=100_000)
    parser.add_argument("--side", type=int, default=SIDE, help="pixels per side of the input")
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    arguments = parser.parse_args()
    options = ReliefOptions(face_limit=arguments.face_limit)

    with tempfile.TemporaryDirectory() as folder:
        suffix = ".png" if arguments.format == "png" else ".jpg"
        path = photo_like(Path(folder) / f"photo{suffix}", arguments.side)
        timed_run(path, options)  # warm up imports and caches
        runs = [timed_run(path, options) for _ in range(arguments.runs)]
        with multiprocessing.get_context("spawn").Pool(1) as fresh:
            rss_growth_kib = fresh.apply(rss_growth_of_one_build, (path, options))

        tracemalloc.start()
        build_relief(path, options)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    result = runs[0][0]
    seconds = [wall for _, wall, _ in runs]
    median = statistics.median(seconds)
    print(
        f"input      {arguments.side}×{arguments.side} {arguments.format.upper()},"
        f" face_limit {options.face_limit:,}"
    )
    print(
        f"output     {result.face_count:,} faces, {result.vertex_count:,} vertices, "
        f"GLB {len(result.glb) / 1e6:.2f} MB, preview {len(result.preview_png) / 1e3:.0f} kB"
    )
    print(
        f"wall time  median {median:.3f} s of {len(seconds)} runs "
        f"(min {min(seconds):.3f}, max {max(seconds):.3f})"
    )
    print(f"target     {TARGET_SECONDS:.2f} s: ratio {median / TARGET_SECONDS:.2f}")
    for stage in runs[0][2]:
        stage_median = statistics.median(stages[stage] for _, _, stages in runs)
        print(f"  {stage:<26} {stage_median * 1000:6.1f} ms")
    mesh = trimesh.load(io.BytesIO(result.glb), file_type="glb", force="mesh")
    render_seconds = []
    for _ in range(len(runs)):
        start = time.perf_counter()
        render_preview(mesh)
        render_seconds.append(time.perf_counter() - start)
    render_median = statistics.median(render_seconds)
    print(f"  of which the preview render {render_median * 1000:6.1f} ms (timed alone)")
    print(
        f"memory     tracemalloc peak {traced_peak / 2**20:.1f} MiB, "
        f"peak RSS growth {rss_growth_kib / 1024:.1f} MiB (a fresh process)"
    )


if __name__ == "__main__":
    main()
