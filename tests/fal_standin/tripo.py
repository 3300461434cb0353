"""Tripo3D v2.5 image-to-3D as fal serves it: input validation, output and failure bodies."""

import base64
import binascii
import io
from collections.abc import Callable

from PIL import Image, UnidentifiedImageError

from . import assets

ERRORS_DOC = "https://docs.fal.ai/errors"
CHOICES = {
    "texture": ("no", "standard", "HD"),
    "texture_alignment": ("original_image", "geometry"),
    "orientation": ("default", "align_image"),
}
OPTIONAL_INTEGERS = ("seed", "texture_seed")
OPTIONAL_BOOLEANS = ("pbr", "auto_size", "quad")
MODEL_ERROR = {
    "loc": ["body"],
    "msg": "Tripo3D could not generate a 3D model from the input image.",
    "type": "downstream_service_error",
    "url": f"{ERRORS_DOC}#downstream_service_error",
}
CANCELLED = ("Request was cancelled before it started", "request_cancelled")


def validate_input(arguments: object, fetch: Callable[[str], bytes | None]) -> list[dict]:
    """Return pydantic-style error entries for Tripo3D arguments; empty when they are valid."""
    if not isinstance(arguments, dict):
        message = "Input should be a valid dictionary or object to extract fields from"
        return [_error(["body"], message, "model_attributes_type")]
    errors = []
    if "image_url" not in arguments:
        errors.append(_error(["body", "image_url"], "Field required", "missing"))
    else:
        errors += _check_image(arguments["image_url"], fetch)
    for name, allowed in CHOICES.items():
        if name in arguments and arguments[name] not in allowed:
            expected = " or ".join([", ".join(f"'{v}'" for v in allowed[:-1]), f"'{allowed[-1]}'"])
            errors.append(
                _error(
                    ["body", name],
                    f"Input should be {expected}",
                    "literal_error",
                    ctx={"expected": expected},
                )
            )
    for name in (*OPTIONAL_INTEGERS, "face_limit"):
        value = arguments.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(_error(["body", name], "Input should be a valid integer", "int_type"))
    face_limit = arguments.get("face_limit")
    if isinstance(face_limit, int) and not isinstance(face_limit, bool) and face_limit <= 0:
        errors.append(
            _error(
                ["body", "face_limit"],
                "Input should be greater than 0",
                "greater_than",
                ctx={"gt": 0},
            )
        )
    for name in OPTIONAL_BOOLEANS:
        value = arguments.get(name)
        if value is not None and not isinstance(value, bool):
            errors.append(_error(["body", name], "Input should be a valid boolean", "bool_type"))
    return errors


def output_files(request_id: str, outcome: str) -> dict[str, tuple[bytes, str]]:
    """Return the files a finished request publishes, by URL path: (bytes, content type)."""
    files = {f"/files/output/{request_id}/preview.webp": (assets.preview_webp(), "image/webp")}
    if outcome != "missing_mesh":
        mesh = assets.NOT_GLTF if outcome == "bad_glb" else assets.model_glb()
        files[f"/files/output/{request_id}/model.glb"] = (mesh, "application/octet-stream")
    return files


def output_body(base_url: str, task_id: str, files: dict[str, tuple[bytes, str]]) -> dict:
    """Return Tripo3D's output JSON describing the published files."""
    body: dict = {"task_id": task_id}
    for key, file_name in (("model_mesh", "model.glb"), ("rendered_image", "preview.webp")):
        for path, (data, content_type) in files.items():
            if path.endswith("/" + file_name):
                body[key] = {
                    "url": base_url + path,
                    "content_type": content_type,
                    "file_name": file_name,
                    "file_size": len(data),
                }
    return body


def failure(outcome: str, errors: list[dict]) -> tuple[str | None, str | None]:
    """Return the (error, error_type) pair a COMPLETED status carries for an outcome."""
    if outcome == "cancelled":
        return CANCELLED
    if outcome == "model_error":
        return MODEL_ERROR["msg"], MODEL_ERROR["type"]
    if outcome == "invalid":
        return errors[0]["msg"], errors[0]["type"]
    return None, None


def _check_image(image_url: object, fetch: Callable[[str], bytes | None]) -> list[dict]:
    """Return errors for an image_url that is not a readable image."""
    loc = ["body", "image_url"]
    if not isinstance(image_url, str):
        return [_error(loc, "Input should be a valid string", "string_type")]
    if image_url.startswith("data:"):
        data = _decode_data_uri(image_url)
    else:
        data = fetch(image_url)
        if data is None:
            message = "Failed to download the file. Please check if the URL is accessible."
            return [_fal_error(loc, message, "file_download_error")]
    if data is None or not _is_image(data):
        message = (
            "Failed to load the image. Please ensure the image file is not corrupted "
            "and is in a supported format."
        )
        return [_fal_error(loc, message, "image_load_error")]
    return []


def _decode_data_uri(uri: str) -> bytes | None:
    """Return the bytes of a `data:image/...;base64,` URI, or None when it is not one."""
    header, _, payload = uri.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error:
        return None


def _is_image(data: bytes) -> bool:
    """Tell whether Pillow recognises the bytes as an intact image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False
    return True


def _error(loc: list, msg: str, kind: str, ctx: dict | None = None) -> dict:
    """Return one validation error entry as FastAPI/pydantic report it."""
    entry = {"loc": loc, "msg": msg, "type": kind}
    if ctx is not None:
        entry["ctx"] = ctx
    return entry


def _fal_error(loc: list, msg: str, kind: str) -> dict:
    """Return one of fal's own model error entries, which link to fal's error docs."""
    return {**_error(loc, msg, kind), "url": f"{ERRORS_DOC}#{kind}"}
