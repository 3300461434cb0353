"""The offline relief generator: one image to a textured, watertight bas-relief GLB and a preview.

The result is a relief made from the picture, not a reconstruction of hidden sides: a closed solid
whose front is a height field of the image's smoothed luminance, with a flat back at z = 0 and
side walls, in metres, the image as its base colour texture. Transparent pixels make no geometry.
"""

import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import BinaryIO

import numpy as np
import trimesh
from PIL import Image, ImageFilter, ImageOps
from trimesh.visual import TextureVisuals
from trimesh.visual.material import PBRMaterial

from image2model.generators.relief_mesh import (
    ALPHA_THRESHOLD,
    build_solid,
    choose_mask,
    vertex_heights,
)
from image2model.models3d.render import render_preview

MAX_TEXTURE_SIDE = 2048
MIN_OPAQUE_PIXELS = 4
BLEED_REDUCTION = 8
PLAIN_COLOUR = (204, 204, 204, 255)  # the light grey of an untextured relief
_NUMBER_BOUNDS = {
    "face_limit": (100, 2_000_000),
    "width_mm": (1.0, 2000.0),
    "depth_mm": (0.1, 200.0),
    "base_mm": (0.2, 200.0),
}
_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA"})  # averaging palette indices would not do
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(frozen=True)
class ReliefOptions:
    """What to build; the parse_relief_options bounds apply to every field.

    face_limit: the solid never has more triangles, and comes within a few percent of it unless
    the image has fewer pixels than that needs (cells are never smaller than a pixel).
    width_mm: the physical width of the whole image along x; its height follows the aspect ratio.
    depth_mm: the front's height range: the darkest point sits depth_mm lower than the brightest
    (the brightest lower when invert is set), whatever the image's own contrast, so the z extent
    is always base_mm + depth_mm; an image of one flat tone gives a slab that thick.
    base_mm: the thickness under the lowest point of the front.
    invert: darker is thicker, for lithophanes.
    textured: the image is the base colour texture; False gives a plain light-grey material, with
    neither image nor UVs in the GLB (texture_enabled=false or texture=no in a request).
    """

    face_limit: int = 100_000
    width_mm: float = 100.0
    depth_mm: float = 5.0
    base_mm: float = 2.0
    invert: bool = False
    textured: bool = True


@dataclass(frozen=True)
class ReliefResult:
    """The GLB (glTF 2.0 binary, metres), its preview PNG, and the mesh's size."""

    glb: bytes
    preview_png: bytes
    face_count: int
    vertex_count: int


class ReliefInputError(ValueError):
    """The image or the options cannot make a relief; details names each field and the reason."""

    def __init__(self, message: str, details: Mapping[str, object]):
        super().__init__(message)
        self.details = dict(details)


def parse_relief_options(fields: Mapping[str, object]) -> ReliefOptions:
    """Return checked options from form strings or JSON values; absent or empty keep defaults."""
    values: dict[str, object] = {}
    problems: dict[str, str] = {}
    for field, (low, high) in _NUMBER_BOUNDS.items():
        raw = fields.get(field)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        try:
            number = _as_int(raw) if field == "face_limit" else _as_float(raw)
        except ValueError as exc:
            problems[field] = str(exc)
            continue
        if not low <= number <= high:
            problems[field] = f"must be between {low:.10g} and {high:.10g}"
        else:
            values[field] = number
    raw_invert = fields.get("invert")
    if raw_invert is not None and raw_invert != "":
        try:
            values["invert"] = _as_bool(raw_invert)
        except ValueError as exc:
            problems["invert"] = str(exc)
    if problems:
        raise ReliefInputError("invalid relief options", problems)
    return ReliefOptions(**values)


def _as_int(raw: object) -> int:
    """Return raw as an integer, accepting digit strings and integral floats."""
    try:
        number = _as_float(raw)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise ValueError("must be an integer")
    return int(number)


def _as_float(raw: object) -> float:
    """Return raw as a finite float, accepting numeric strings."""
    number = None
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            number = float(raw)
        elif isinstance(raw, str):
            number = float(raw.strip())
    except (ValueError, OverflowError):  # OverflowError: an integer too large for a float
        pass
    if number is None or not math.isfinite(number):
        raise ValueError("must be a number")
    return number


def _as_bool(raw: object) -> bool:
    """Return raw as a bool, accepting true/false, 1/0, yes/no and on/off."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
        return raw.strip().lower() in _TRUE_WORDS
    raise ValueError("must be true or false")


def build_relief(
    image_path: str | os.PathLike[str] | BinaryIO,
    options: ReliefOptions,
    progress: Callable[[int, str], None] | None = None,
) -> ReliefResult:
    """Build the relief GLB and its preview PNG from one image file.

    progress(percent, message) hears of each stage: decode, mesh, texture, write. Raises
    ReliefInputError when the options are out of bounds or the image cannot make a solid.
    """
    parse_relief_options(asdict(options))  # the same bounds for options made in code
    report = progress or (lambda percent, message: None)
    report(5, "decoding image")
    texture, luminance, alpha = _decode(image_path)

    report(20, "building mesh")
    mask = choose_mask(alpha, texture.size, options.face_limit)
    if not mask.any():
        raise ReliefInputError(
            "the opaque part of the image is too small or thin to build a solid",
            {"image": "no grid cell at this face_limit is mostly opaque"},
        )
    heights = vertex_heights(luminance, mask, options.invert)
    width_m = options.width_mm / 1000
    size_m = (width_m, width_m * texture.height / texture.width)
    vertices, faces, uv = build_solid(
        mask, heights, size_m, options.base_mm / 1000, options.depth_mm / 1000
    )

    report(60, "applying texture")
    if options.textured:
        # trimesh embeds a texture whose source format is JPEG as JPEG: for a photo that is
        # several times faster to write and half the size of the PNG it would otherwise encode
        texture.format = "JPEG"
        material = PBRMaterial(
            name="relief", baseColorTexture=texture, metallicFactor=0.0, roughnessFactor=0.9
        )
    else:
        material = PBRMaterial(
            name="relief", baseColorFactor=PLAIN_COLOUR, metallicFactor=0.0, roughnessFactor=0.9
        )
        uv = None
    mesh = trimesh.Trimesh(
        vertices,
        faces,
        visual=TextureVisuals(uv=uv, material=material),
        process=False,
        validate=False,
    )

    report(80, "writing GLB and preview")
    scene = trimesh.Scene()
    scene.add_geometry(mesh, geom_name="relief", node_name="relief")
    glb = scene.export(file_type="glb")
    return ReliefResult(
        glb=glb,
        preview_png=render_preview(mesh),
        face_count=len(faces),
        vertex_count=len(vertices),
    )


def check_relief_image(image_path, options: ReliefOptions) -> None:
    """Raise ReliefInputError if this image cannot make a solid with these options."""
    texture, _luminance, alpha = _decode(image_path)
    if not choose_mask(alpha, texture.size, options.face_limit).any():
        raise ReliefInputError(
            "the opaque part of the image is too small or thin to build a solid",
            {"image": "no grid cell at this face_limit is mostly opaque"},
        )


def _decode(image_path) -> tuple[Image.Image, Image.Image, Image.Image | None]:
    """Return the upright RGB texture, its luminance and its alpha (None when fully opaque)."""
    image = _open_upright(image_path)
    if image.width < 2 or image.height < 2:
        raise ReliefInputError(
            "the image is too small to make a relief",
            {"image": f"{image.width}×{image.height} pixels; at least 2×2 are needed"},
        )
    if image.mode in _WIDE_GREY_MODES:
        # Pillow clips 16-bit grey to 8 bits rather than scaling it: a height map would go white
        grey = np.asarray(image, dtype=np.float32) / 257
        image = Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8))
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        rgba.thumbnail((MAX_TEXTURE_SIDE, MAX_TEXTURE_SIDE), Image.Resampling.LANCZOS)
        alpha = rgba.getchannel("A")
        if np.count_nonzero(np.asarray(alpha) >= ALPHA_THRESHOLD) < MIN_OPAQUE_PIXELS:
            raise ReliefInputError(
                "the image is transparent: there is no subject to build",
                {"image": f"fewer than {MIN_OPAQUE_PIXELS} pixels are at least half opaque"},
            )
        if alpha.getextrema()[0] < 255:
            texture = Image.composite(rgba, _bled_colours(rgba), alpha).convert("RGB")
            return texture, texture.convert("L"), alpha
        image = rgba
    texture = image.convert("RGB")
    texture.thumbnail((MAX_TEXTURE_SIDE, MAX_TEXTURE_SIDE), Image.Resampling.LANCZOS)
    return texture, texture.convert("L"), None


def _open_upright(image_path) -> Image.Image:
    """Return the decoded image, turned as its EXIF orientation says (big JPEGs decode scaled)."""
    try:
        with Image.open(image_path) as opened:
            longest = max(opened.size)
            if longest > MAX_TEXTURE_SIDE:
                # a JPEG then decodes at a reduced scale: much faster for large photos
                scale = MAX_TEXTURE_SIDE / longest
                draft_size = (math.ceil(opened.width * scale), math.ceil(opened.height * scale))
                opened.draft(None, draft_size)
            opened.load()
            image = opened
            # Not with a colour key ("transparency"): averaging first would blend the key colour
            # into opaque edge pixels before it turns into alpha.
            reducible = image.mode in _REDUCIBLE_MODES and "transparency" not in image.info
            if reducible and max(image.size) >= 2 * MAX_TEXTURE_SIDE:
                # A large PNG cannot decode scaled: shrink it by whole pixels at once, before
                # the copies that turning and converting make, so that they stay small.
                image = image.reduce(max(image.size) // MAX_TEXTURE_SIDE)
            return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as exc:
        raise ReliefInputError("the image has too many pixels", {"image": str(exc)}) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        reason = str(exc) or type(exc).__name__
        raise ReliefInputError(
            "the file is not an image that can be decoded", {"image": reason}
        ) from exc


def _bled_colours(rgba: Image.Image) -> Image.Image:
    """Return the image with the subject's colours spread a little way into transparent pixels.

    The colour stored under alpha 0 is arbitrary (often black); outline cells and walls sample
    it, so it is replaced by the nearby subject's colour: a blur of premultiplied colour.
    """
    factor = max(1, min(BLEED_REDUCTION, min(rgba.size) // 2))
    spread = rgba.convert("RGBa").reduce(factor).filter(ImageFilter.GaussianBlur(2))
    return spread.convert("RGBA").resize(rgba.size, Image.Resampling.BILINEAR)
