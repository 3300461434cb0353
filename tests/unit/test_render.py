"""The software preview renderer: framing, depth order, colours, texture and determinism."""

import io

import numpy as np
import pytest
import trimesh
from PIL import Image
from trimesh.visual import TextureVisuals
from trimesh.visual.material import PBRMaterial

from image2model.models3d import render
from image2model.models3d.render import BACKGROUND, render_preview


def pixels_of(png: bytes) -> np.ndarray:
    """Decode PNG bytes into an (h, w, 3) array."""
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(int)


def drawn(pixels: np.ndarray) -> np.ndarray:
    """Return a mask of the pixels that differ from the background."""
    return np.any(pixels != BACKGROUND, axis=-1)


def quad(z: float, x_range=(-1.0, 1.0), y_range=(-1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Return the vertices and two faces of an axis-aligned square facing +z."""
    (x0, x1), (y0, y1) = x_range, y_range
    vertices = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=float)
    return vertices, np.array([[0, 1, 2], [0, 2, 3]])


def textured_square() -> trimesh.Trimesh:
    """Return a square whose texture is red on the left half and blue on the right."""
    texture = np.zeros((8, 8, 3), dtype=np.uint8)
    texture[:, :4] = (220, 20, 20)
    texture[:, 4:] = (20, 20, 220)
    vertices, faces = quad(0.0)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    material = PBRMaterial(baseColorTexture=Image.fromarray(texture))
    return trimesh.Trimesh(
        vertices, faces, visual=TextureVisuals(uv=uv, material=material), process=False
    )


@pytest.mark.parametrize("size", [64, 200, 512])
def test_the_preview_is_a_square_png_of_the_requested_size(size):
    image = Image.open(io.BytesIO(render_preview(trimesh.creation.box(), size=size)))
    assert image.size == (size, size)


def test_the_mesh_is_centred_and_fills_the_frame():
    pixels = pixels_of(render_preview(trimesh.creation.icosphere(subdivisions=3), size=128))
    rows, cols = np.nonzero(drawn(pixels))
    assert rows.min() > 0 and cols.min() > 0 and rows.max() < 127 and cols.max() < 127
    assert (rows.max() - rows.min()) > 0.85 * 128
    assert abs((rows.max() + rows.min()) / 2 - 63.5) <= 2
    assert abs((cols.max() + cols.min()) / 2 - 63.5) <= 2


def test_rendering_is_deterministic():
    mesh = trimesh.creation.icosphere(subdivisions=4)
    assert render_preview(mesh) == render_preview(mesh)


def test_an_empty_mesh_gives_the_background():
    pixels = pixels_of(render_preview(trimesh.Trimesh(), size=32))
    assert not drawn(pixels).any()


def test_degenerate_and_non_finite_input_does_not_fail():
    vertices = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [0, 1, 0]], dtype=float)
    flat = trimesh.Trimesh(vertices, [[0, 1, 2], [0, 1, 3]], process=False)
    assert drawn(pixels_of(render_preview(flat, size=32))).any()
    broken = trimesh.Trimesh(vertices * np.nan, [[0, 1, 3]], process=False)
    assert not drawn(pixels_of(render_preview(broken, size=32))).any()


@pytest.mark.parametrize("near_first", [False, True])
def test_the_nearer_surface_hides_the_farther_one(near_first):
    near = (*quad(1.0, x_range=(-1.0, 0.2)), (255, 0, 0, 255))
    far = (*quad(0.0, x_range=(-0.2, 1.0)), (0, 0, 255, 255))
    first, second = (near, far) if near_first else (far, near)
    mesh = trimesh.Trimesh(
        np.vstack([first[0], second[0]]),
        np.vstack([first[1], second[1] + 4]),
        face_colors=[first[2]] * 2 + [second[2]] * 2,
        process=False,
    )
    centre = pixels_of(render_preview(mesh, size=101))[50, 50]
    assert centre[0] > centre[2]  # red, the near square, covers the overlap


def test_texture_colours_follow_the_uvs():
    pixels = pixels_of(render_preview(textured_square(), size=100))
    left, right = pixels[50, 25], pixels[50, 75]
    assert left[0] > 2 * left[2]
    assert right[2] > 2 * right[0]


def test_vertex_colours_are_interpolated():
    vertices, faces = quad(0.0)
    colours = [(255, 0, 0, 255), (255, 0, 0, 255), (0, 0, 255, 255), (0, 0, 255, 255)]
    mesh = trimesh.Trimesh(vertices, faces, vertex_colors=colours, process=False)
    pixels = pixels_of(render_preview(mesh, size=100))
    bottom, middle, top = pixels[80, 50], pixels[50, 50], pixels[20, 50]
    assert bottom[0] > bottom[2] and top[2] > top[0]
    assert bottom[0] > middle[0] > top[0]


def test_light_shades_faces_by_their_direction():
    pixels = pixels_of(render_preview(trimesh.creation.box(), size=200))
    shades = {tuple(colour) for colour in pixels[drawn(pixels)]}
    # three visible sides of a plain box, each lit differently
    assert len(shades) >= 3
    front, top = pixels[130, 90], pixels[20, 100]
    assert tuple(front) != tuple(top)


def test_splitting_the_work_into_passes_changes_nothing(monkeypatch):
    mesh = trimesh.creation.icosphere(subdivisions=3)
    whole = render_preview(mesh, size=96)
    monkeypatch.setattr(render, "MAX_SAMPLES_PER_PASS", 50)
    assert render_preview(mesh, size=96) == whole


def test_a_textured_relief_sized_mesh_renders(tmp_path):
    rows, cols = np.mgrid[0:200, 0:250]
    heights = np.sin(rows / 15.0) * np.cos(cols / 20.0)
    vertices = np.column_stack([cols.ravel() / 250, rows.ravel() / 200, 0.02 * heights.ravel()])
    grid = np.arange(200 * 250).reshape(200, 250)
    corners = grid[:-1, :-1].ravel(), grid[:-1, 1:].ravel(), grid[1:, 1:].ravel()
    faces = np.vstack(
        [np.column_stack(corners), np.column_stack([corners[0], corners[2], grid[1:, :-1].ravel()])]
    )
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert len(mesh.faces) > 90_000
    pixels = pixels_of(render_preview(mesh))
    assert drawn(pixels).mean() > 0.3
    assert pixels[drawn(pixels)].std() > 5  # the waves are shaded


def test_the_base_colour_factor_tints_the_texture():
    mesh = textured_square()
    plain = pixels_of(render_preview(mesh, size=100))[50, 25]
    mesh.visual.material.baseColorFactor = (128, 255, 255, 255)
    tinted = pixels_of(render_preview(mesh, size=100))[50, 25]
    assert tinted[0] == pytest.approx(plain[0] * 128 / 255, abs=2)
    assert tinted[1:] == pytest.approx(plain[1:], abs=1)
