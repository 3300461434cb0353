"""The `relief` generator: declared, its images checked, and run as one local step: image in,
GLB and PNG preview out."""

import os

from image2model.errors import ApiError
from image2model.files import storage
from image2model.generators.base import Generator
from image2model.generators.options import relief_options
from image2model.generators.relief import (
    ReliefInputError,
    ReliefOptions,
    build_relief,
    check_relief_image,
)


def step(run):
    """Build the relief, report its stages, and store the results atomically."""
    run.transition("processing", progress=1, message="Building the relief")
    try:
        result = build_relief(
            run.image_path,
            ReliefOptions(**run.options),
            progress=lambda percent, message: run.log(message, progress=percent * 0.95),
        )
    except ReliefInputError as error:
        run.fail("VALIDATION_ERROR", str(error))
        return
    directory = storage.job_results_dir(run.app, run.row["job_id"], create=True)
    stem = run.row["result_stem"]
    storage.atomic_write_bytes(os.path.join(directory, f"{stem}.glb"), result.glb)
    preview_file = storage.preview_name(stem, ".png")
    storage.atomic_write_bytes(os.path.join(directory, preview_file), result.preview_png)
    run.transition(
        "completed",
        progress=100,
        message=f"Relief ready ({result.face_count} faces)",
        result_file=f"{stem}.glb",
        preview_file=preview_file,
    )


def check_images(sources, options):
    """Raise 400 naming each image that cannot make a relief: `sources` maps label -> file."""
    problems = {}
    for label, source in sources.items():
        try:
            check_relief_image(source, ReliefOptions(**options))
        except ReliefInputError as error:
            problems[label] = str(error)
        finally:
            if hasattr(source, "seek"):
                source.seek(0)
    if problems:
        raise ApiError(
            "VALIDATION_ERROR",
            "Some images cannot make a relief",
            {"files": problems, "model_type": GENERATOR.name},
        )


GENERATOR = Generator(
    name="relief",
    title="Relief",
    description="Offline bas-relief: a textured height field made from the image itself,"
    " not a reconstruction of hidden sides",
    remote=False,
    estimated_seconds=5,
    parse_options=relief_options,
    step=step,
    check_images=check_images,
)
