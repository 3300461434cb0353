"""Generation options from a form or JSON body: the checks each generator declares."""

import dataclasses

from image2model.errors import ApiError
from image2model.params import bounded_int, choice

FACE_LIMIT_RANGE = (100, 500_000)
TEXTURES = ("no", "standard", "HD")
QUALITY_TO_TEXTURE = {"standard": "standard", "high": "HD", "hd": "HD"}
TEXTURE_ALIGNMENTS = ("original_image", "geometry")
ORIENTATIONS = ("default", "align_image")


def _flag(value, field):
    """Return a boolean from JSON true/false or a form string."""
    if value is None or value == "" or isinstance(value, bool):
        return value if isinstance(value, bool) else None
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ApiError("VALIDATION_ERROR", f"{field} must be true or false", {field: value})


def texture_choice(fields):
    """Return the texture asked for, one of TEXTURES, from texture / quality / texture_enabled."""
    texture = choice(fields.get("texture"), "texture", TEXTURES)
    if texture is None:
        quality = fields.get("quality")
        quality = choice(
            str(quality).lower() if quality else None,
            "quality",
            tuple(QUALITY_TO_TEXTURE),
            default="standard",
        )
        texture = QUALITY_TO_TEXTURE[quality]
    if _flag(fields.get("texture_enabled"), "texture_enabled") is False:
        texture = "no"
    return texture


def tripo3d_options(fields):
    """Return Tripo3D arguments: face_limit, texture (from texture / quality / texture_enabled)."""
    options = {}
    face_limit = bounded_int(fields.get("face_limit"), "face_limit", *FACE_LIMIT_RANGE)
    if face_limit is not None:
        options["face_limit"] = face_limit
    options["texture"] = texture_choice(fields)
    alignment = choice(fields.get("texture_alignment"), "texture_alignment", TEXTURE_ALIGNMENTS)
    if alignment:
        options["texture_alignment"] = alignment
    orientation = choice(fields.get("orientation"), "orientation", ORIENTATIONS)
    if orientation:
        options["orientation"] = orientation
    return options


def relief_options(fields):
    """Return the relief generator's options as a dict."""
    from image2model.generators.relief import ReliefInputError, parse_relief_options

    problems, parsed, texture = {}, None, None
    try:
        parsed = parse_relief_options(fields)
    except ReliefInputError as error:
        problems.update(error.details)
    try:
        texture = texture_choice(fields)
    except ApiError as error:
        problems[next(iter(error.details))] = error.message  # the field comes first
    if problems:
        raise ApiError("VALIDATION_ERROR", "Invalid relief options", problems)
    # The relief's texture is the image itself: any texture but "no" is the same one.
    return dataclasses.asdict(dataclasses.replace(parsed, textured=texture != "no"))
