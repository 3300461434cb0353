"""The `relief` generator run as one pool step: image in, GLB and PNG preview out."""

import os

from image2model import storage
from image2model.generators.relief import ReliefInputError, ReliefOptions, build_relief


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
