"""The relief generator: a closed, textured, bounded, deterministic solid from any usable image."""

import io
import json
import math
import struct

import numpy as np
import pytest
import trimesh
from PIL import Image, ImageDraw

from image2model.generators.relief import (
    ReliefInputError,
    ReliefOptions,
    build_relief,
    parse_relief_options,
)
from image2model.generators.relief_mesh import build_solid, count_faces, remove_pinches

SMALL = ReliefOptions(face_limit=20_000)


def photo(path, size=(256, 192)):
    """Write a photo-like RGB JPEG: gradients, noise and a few shapes."""
    width, height = size
    rows, cols = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(7).normal(0, 10, (height, width, 3))
    pixels = np.stack([cols / width, rows / height, (cols + rows) / (width + height)], axis=-1)
    image = Image.fromarray(np.clip(pixels * 255 + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 4, width // 2, height // 2), fill=(240, 220, 30))
    draw.rectangle((width // 2, height // 2, width * 9 // 10, height * 9 // 10), fill=(20, 30, 160))
    image.save(path, quality=90)
    return path


def cut_out(path, shapes, size=(200, 200)):
    """Write an RGBA PNG, transparent except the opaque (x0, y0, x1, y1, alpha) ellipses."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1, alpha in shapes:
        draw.ellipse((x0, y0, x1, y1), fill=(200, 60, 40, alpha))
    image.save(path)
    return path


def load(glb: bytes) -> trimesh.Trimesh:
    """Load GLB bytes back as one mesh."""
    return trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh")


def glb_document(glb: bytes) -> dict:
    """Return the JSON chunk of a GLB."""
    magic, version, _ = struct.unpack_from("<4sII", glb)
    assert (magic, version) == (b"glTF", 2)
    json_length, json_type = struct.unpack_from("<II", glb, 12)
    assert json_type == 0x4E4F534A
    return json.loads(glb[20 : 20 + json_length])


def assert_closed_solid(mesh: trimesh.Trimesh):
    """Assert the mesh is watertight, consistently wound and encloses a positive volume."""
    assert mesh.is_watertight
    assert mesh.is_winding_consistent
    assert mesh.volume > 0


def back_area(mesh: trimesh.Trimesh) -> float:
    """Return the area of the faces lying flat at z = 0 (the footprint of the solid)."""
    flat = np.all(np.abs(mesh.vertices[mesh.faces][:, :, 2]) < 1e-9, axis=1)
    return float(mesh.area_faces[flat].sum())


def test_photo_becomes_a_closed_textured_solid(tmp_path):
    result = build_relief(photo(tmp_path / "photo.jpg"), SMALL)
    mesh = load(result.glb)
    assert_closed_solid(mesh)
    assert mesh.euler_number == 2
    assert (len(mesh.faces), len(mesh.vertices)) == (result.face_count, result.vertex_count)
    assert result.preview_png.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(result.preview_png)).size == (512, 512)


@pytest.mark.parametrize(("face_limit", "least_share"), [(100, 0.7), (1000, 0.9), (30_000, 0.95)])
def test_face_count_stays_under_and_close_to_the_limit(tmp_path, face_limit, least_share):
    result = build_relief(photo(tmp_path / "photo.jpg"), ReliefOptions(face_limit=face_limit))
    assert least_share * face_limit <= result.face_count <= face_limit
    assert len(load(result.glb).faces) == result.face_count


def test_face_count_is_capped_by_the_pixels(tmp_path):
    result = build_relief(photo(tmp_path / "tiny.jpg", (20, 10)), ReliefOptions(face_limit=10_000))
    # one cell per pixel: 2 front faces per cell, plus walls and back
    assert result.face_count == 2 * 20 * 10 + 4 * (20 + 10) + 2 * (20 + 10) - 2


def test_bounds_follow_width_aspect_depth_and_base(tmp_path):
    options = ReliefOptions(face_limit=5000, width_mm=80, depth_mm=3, base_mm=1.5)
    mesh = load(build_relief(photo(tmp_path / "photo.jpg", (300, 200)), options).glb)
    assert mesh.bounds[0][2] == pytest.approx(0, abs=1e-9)
    assert mesh.extents == pytest.approx([0.080, 0.080 * 200 / 300, 0.0045], rel=1e-5)


@pytest.mark.parametrize(
    ("mode", "colour_key", "reduced_by"),
    [("RGB", False, 2), ("RGBA", False, 2), ("P", False, None), ("RGB", True, None)],
    ids=["rgb", "rgba", "palette", "colour key"],
)
def test_a_large_png_is_shrunk_early_and_keeps_its_picture(
    tmp_path, monkeypatch, mode, colour_key, reduced_by
):
    image = Image.new("RGB", (4200, 3000), (20, 40, 200))
    ImageDraw.Draw(image).rectangle((0, 0, 2099, 2999), fill=(230, 200, 30))  # left half yellow
    ImageDraw.Draw(image).rectangle((0, 0, 99, 99), fill=(255, 0, 255))  # the key colour
    extra = {"transparency": (255, 0, 255)} if colour_key else {}
    if mode == "RGBA":
        image.putalpha(255)
    image.convert(mode).save(tmp_path / "large.png", compress_level=1, **extra)
    full_size_reductions = []
    reduce = Image.Image.reduce

    def spy(self, factor, *args):
        if self.size == (4200, 3000):
            full_size_reductions.append(factor)
        return reduce(self, factor, *args)

    monkeypatch.setattr(Image.Image, "reduce", spy)
    result = build_relief(tmp_path / "large.png", ReliefOptions(face_limit=2000))
    # Palette indices and a colour key cannot be averaged: those decode whole, as before.
    # (An RGBA reduce calls itself again on the premultiplied image: the first call is ours.)
    assert full_size_reductions[:1] == ([reduced_by] if reduced_by else [])
    texture = load(result.glb).visual.material.baseColorTexture.convert("RGB")
    assert texture.size == (2048, 1463)
    assert texture.getpixel((500, 700)) == pytest.approx((230, 200, 30), abs=8)
    assert texture.getpixel((1500, 700)) == pytest.approx((20, 40, 200), abs=8)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated a quarter turn: portrait
    Image.new("RGB", (60, 30), (90, 90, 90)).save(tmp_path / "turned.jpg", exif=exif)
    mesh = load(build_relief(tmp_path / "turned.jpg", ReliefOptions(face_limit=1000)).glb)
    assert mesh.extents[:2] == pytest.approx([0.1, 0.2], rel=1e-5)


def test_glb_carries_the_image_as_texture_with_uvs_in_range(tmp_path):
    result = build_relief(photo(tmp_path / "photo.jpg"), SMALL)
    document = glb_document(result.glb)
    material = document["materials"][0]
    texture_index = material["pbrMetallicRoughness"]["baseColorTexture"]["index"]
    image_index = document["textures"][texture_index]["source"]
    assert document["images"][image_index]["mimeType"] in ("image/jpeg", "image/png")
    assert document["asset"]["version"] == "2.0"
    mesh = load(result.glb)
    assert mesh.visual.material.baseColorTexture.size == (256, 192)
    uv = mesh.visual.uv
    assert uv.shape == (len(mesh.vertices), 2)
    assert uv.min() >= 0 and uv.max() <= 1
    # the vertex over the yellow disc's centre (pixel 96, 72) maps to yellow in the texture
    centre = np.array([(96 / 256 - 0.5) * 0.1, (0.5 - 72 / 192) * 0.075, 0.007])
    u, v = uv[np.argmin(np.linalg.norm(mesh.vertices - centre, axis=1))]
    texture = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    assert texture[int((1 - v) * 192), int(u * 256)] == pytest.approx((240, 220, 30), abs=25)


def test_untextured_relief_has_a_plain_material_and_no_image_or_uvs(tmp_path):
    path = photo(tmp_path / "photo.jpg")
    plain = build_relief(path, ReliefOptions(face_limit=20_000, textured=False))
    document = glb_document(plain.glb)
    assert "images" not in document and "textures" not in document
    [primitive] = document["meshes"][0]["primitives"]
    assert "TEXCOORD_0" not in primitive["attributes"]
    colour = document["materials"][0]["pbrMetallicRoughness"]["baseColorFactor"]
    assert colour == pytest.approx([0.8, 0.8, 0.8, 1.0])
    assert plain.face_count == build_relief(path, SMALL).face_count
    preview = np.asarray(Image.open(io.BytesIO(plain.preview_png)).convert("RGB")).reshape(-1, 3)
    shaded = preview[(preview != preview[0]).any(axis=1)]
    assert len(shaded) and (shaded.max(axis=1) - shaded.min(axis=1) <= 2).all()  # grey only


def test_same_input_gives_byte_identical_output(tmp_path):
    path = photo(tmp_path / "photo.jpg")
    first, second = build_relief(path, SMALL), build_relief(path, SMALL)
    assert first.glb == second.glb
    assert first.preview_png == second.preview_png


def test_transparent_pixels_make_no_geometry(tmp_path):
    path = cut_out(tmp_path / "disc.png", [(40, 40, 160, 160, 255)])
    mesh = load(build_relief(path, SMALL).glb)
    assert_closed_solid(mesh)
    assert mesh.euler_number == 2
    # 200 px = 100 mm: the disc has a 30 mm radius about the centre; allow a cell of outline
    radius = np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1])
    cell = np.diff(np.unique(mesh.vertices[:, 0])).min()
    assert radius.max() <= 0.0303 + 1.5 * cell
    assert back_area(mesh) == pytest.approx(math.pi * 0.030**2, rel=0.03)


def test_a_ring_keeps_its_hole(tmp_path):
    image = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 180, 180), fill=(30, 120, 200, 255))
    draw.ellipse((70, 70, 130, 130), fill=(255, 255, 255, 0))
    image.save(tmp_path / "ring.png")
    mesh = load(build_relief(tmp_path / "ring.png", SMALL).glb)
    assert_closed_solid(mesh)
    assert mesh.euler_number == 0  # a torus
    assert np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1]).min() >= 0.013
    assert back_area(mesh) == pytest.approx(math.pi * (0.040**2 - 0.015**2), rel=0.03)


def test_two_islands_make_two_closed_bodies(tmp_path):
    path = cut_out(tmp_path / "two.png", [(10, 10, 80, 80, 255), (110, 110, 190, 190, 255)])
    mesh = load(build_relief(path, SMALL).glb)
    assert_closed_solid(mesh)
    assert mesh.euler_number == 4


def test_half_transparent_pixels_are_left_out(tmp_path):
    path = cut_out(tmp_path / "faint.png", [(10, 10, 90, 90, 100), (110, 110, 190, 190, 255)])
    mesh = load(build_relief(path, SMALL).glb)
    assert mesh.euler_number == 2
    assert mesh.bounds[0][:2] == pytest.approx([0.005, -0.045], abs=0.001)


def test_cells_touching_only_at_a_corner_do_not_pinch(tmp_path):
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.paste((250, 250, 250, 255), (0, 0, 4, 4))
    image.paste((10, 10, 10, 255), (4, 4, 8, 8))
    image.save(tmp_path / "corner.png")
    result = build_relief(tmp_path / "corner.png", ReliefOptions(face_limit=1000))
    mesh = load(result.glb)
    assert_closed_solid(mesh)
    # a shared corner vertex would make it 3
    assert mesh.euler_number == 4


@pytest.mark.parametrize("seed", range(6))
def test_any_mask_gives_a_closed_solid_with_the_counted_faces(seed):
    rng = np.random.default_rng(seed)
    opacity = rng.random((23, 31))
    mask = remove_pinches(opacity > 0.45, opacity)
    corners = rng.random((24, 32))
    vertices, faces, uv = build_solid(mask, corners, (0.031, 0.023), 0.002, 0.005)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert_closed_solid(mesh)
    assert len(faces) == count_faces(mask)
    assert np.unique(faces).size == len(vertices)
    assert uv.min() >= 0 and uv.max() <= 1
    flat_vertices, flat_faces, _ = build_solid(
        mask, np.ones_like(corners), (0.031, 0.023), 0.002, 0.005
    )
    flat = trimesh.Trimesh(flat_vertices, flat_faces, process=False)
    assert flat.volume == pytest.approx(mask.sum() * 1e-6 * 0.007)


def gradient(path, size=(120, 80)):
    """Write a grey image that brightens from left to right."""
    row = np.linspace(0, 255, size[0])
    Image.fromarray(np.tile(row, (size[1], 1)).astype(np.uint8)).save(path)
    return path


def front_profile(mesh: trimesh.Trimesh) -> float:
    """Return the correlation of front height with x: +1 when it rises to the right."""
    front = mesh.vertices[mesh.vertices[:, 2] > 1e-9]
    return float(np.corrcoef(front[:, 0], front[:, 2])[0, 1])


def test_brighter_is_higher_and_invert_flips_it(tmp_path):
    path = gradient(tmp_path / "ramp.png")
    plain = load(build_relief(path, ReliefOptions(face_limit=5000)).glb)
    inverted = load(build_relief(path, ReliefOptions(face_limit=5000, invert=True)).glb)
    assert front_profile(plain) > 0.95
    assert front_profile(inverted) < -0.95
    for mesh in (plain, inverted):
        assert mesh.extents[2] == pytest.approx(0.007, rel=1e-5)


def test_a_16_bit_height_map_keeps_its_range(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 120), (80, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "height16.png")
    mesh = load(build_relief(tmp_path / "height16.png", ReliefOptions(face_limit=5000)).glb)
    assert front_profile(mesh) > 0.95
    front_z = mesh.vertices[mesh.vertices[:, 2] > 1e-9][:, 2]
    # clipped to 8 bits nearly all of it would sit at the top
    assert np.median(front_z) == pytest.approx(0.002 + 0.0025, abs=0.0005)


def test_a_flat_image_makes_a_slab_of_full_thickness(tmp_path):
    Image.new("RGB", (50, 40), (128, 128, 128)).save(tmp_path / "flat.png")
    mesh = load(build_relief(tmp_path / "flat.png", ReliefOptions(face_limit=1000)).glb)
    assert_closed_solid(mesh)
    assert mesh.volume == pytest.approx(0.1 * 0.08 * 0.007, rel=1e-4)


def test_progress_reports_each_stage_in_order(tmp_path):
    reports = []
    build_relief(
        photo(tmp_path / "photo.jpg"),
        SMALL,
        lambda percent, message: reports.append((percent, message)),
    )
    percents = [percent for percent, _ in reports]
    assert len(reports) == 4
    assert percents == sorted(set(percents)) and 0 <= percents[0] and percents[-1] <= 100
    assert ["decod", "mesh", "textur", "writ"] == [
        next(word for word in ("decod", "mesh", "textur", "writ") if word in message)
        for _, message in reports
    ]


def truncated_jpeg() -> bytes:
    """Return the first half of a valid JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.mark.parametrize(
    ("upload", "words"),
    [
        (Image.new("RGB", (1, 1), (1, 2, 3)), "too small"),
        (Image.new("L", (5, 1)), "too small"),
        (Image.new("RGBA", (30, 30), (9, 9, 9, 0)), "transparent"),
        (Image.new("RGBA", (30, 30), (9, 9, 9, 127)), "transparent"),
        (truncated_jpeg(), "not an image"),
        (b"this is not a picture", "not an image"),
        (b"", "not an image"),
    ],
    ids=["1x1", "one-row", "all-transparent", "all-half-transparent", "truncated", "text", "empty"],
)
def test_unusable_images_are_input_errors(tmp_path, upload, words):
    path = tmp_path / "upload"
    if isinstance(upload, bytes):
        path.write_bytes(upload)
    else:
        upload.save(path, format="PNG")
    with pytest.raises(ReliefInputError, match=words) as raised:
        build_relief(path, SMALL)
    assert set(raised.value.details) == {"image"}
    assert raised.value.details["image"]


def test_a_hairline_too_thin_for_the_face_limit_is_an_input_error(tmp_path):
    image = Image.new("RGBA", (1000, 1000), (0, 0, 0, 0))
    image.paste((255, 255, 255, 255), (0, 500, 1000, 501))
    image.save(tmp_path / "hairline.png")
    with pytest.raises(ReliefInputError, match="too small or thin") as raised:
        build_relief(tmp_path / "hairline.png", ReliefOptions(face_limit=100))
    assert "image" in raised.value.details


def test_a_speck_still_becomes_a_small_closed_solid(tmp_path):
    image = Image.new("RGBA", (1000, 1000), (0, 0, 0, 0))
    image.paste((255, 255, 255, 255), (500, 500, 503, 503))
    image.save(tmp_path / "speck.png")
    mesh = load(build_relief(tmp_path / "speck.png", ReliefOptions(face_limit=100)).glb)
    assert_closed_solid(mesh)
    assert mesh.extents[0] <= 0.001


def test_options_default_when_absent_or_empty():
    assert parse_relief_options({}) == ReliefOptions()
    empty_form = {"face_limit": "", "invert": "", "colour": "blue"}
    assert parse_relief_options(empty_form) == ReliefOptions()


FORM = {
    "face_limit": "5000",
    "width_mm": "120.5",
    "depth_mm": "3",
    "base_mm": " 1 ",
    "invert": "yes",
}
JSON = {"face_limit": 2_000_000, "width_mm": 1, "depth_mm": 0.1, "base_mm": 0.2, "invert": False}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (FORM, ReliefOptions(5000, 120.5, 3.0, 1.0, True)),
        (JSON, ReliefOptions(2_000_000, 1.0, 0.1, 0.2, False)),
        ({"face_limit": 1e5, "invert": 1}, ReliefOptions(face_limit=100_000, invert=True)),
        ({"face_limit": "1e3", "invert": "OFF"}, ReliefOptions(face_limit=1000)),
        ({"invert": "on"}, ReliefOptions(invert=True)),
    ],
)
def test_options_parse_form_strings_and_json_values(fields, expected):
    assert parse_relief_options(fields) == expected


BAD_OPTIONS = {
    "face_limit": ["many", 99, 2_000_001, 1000.5, True, [1000]],
    "width_mm": ["wide", 0.5, 2001, "nan", "inf"],
    "depth_mm": [0, -1, "3 mm"],
    "base_mm": [0.1, False],
    "invert": ["maybe", 2, 0.5],
}


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for field, values in BAD_OPTIONS.items() for value in values],
)
def test_bad_options_name_the_field(field, value):
    with pytest.raises(ReliefInputError) as raised:
        parse_relief_options({field: value})
    assert list(raised.value.details) == [field]


def test_bounds_are_written_out_in_full():
    with pytest.raises(ReliefInputError) as raised:
        parse_relief_options({"face_limit": 5, "depth_mm": 0})
    assert raised.value.details == {
        "face_limit": "must be between 100 and 2000000",
        "depth_mm": "must be between 0.1 and 200",
    }


def test_every_bad_option_is_reported_at_once():
    with pytest.raises(ReliefInputError) as raised:
        parse_relief_options({"face_limit": 5, "depth_mm": "deep", "invert": "?", "width_mm": 50})
    assert set(raised.value.details) == {"face_limit", "depth_mm", "invert"}


def test_options_made_in_code_are_checked_too(tmp_path):
    with pytest.raises(ReliefInputError) as raised:
        build_relief(photo(tmp_path / "photo.jpg"), ReliefOptions(face_limit=5))
    assert list(raised.value.details) == ["face_limit"]
