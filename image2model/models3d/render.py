"""A software preview of a mesh: a shaded, textured PNG with no display, OpenGL or GPU.

An orthographic camera looks at the mesh from the front (+z, glTF's usual facing), a little to the
right and above, and fits it into the frame. Triangles are scan-converted with numpy, a z-buffer
keeps the nearest, and each pixel gets its texture (or vertex or face) colour times Lambert light.
"""

import io
from typing import NamedTuple

import numpy as np
import trimesh
from PIL import Image

AZIMUTH_DEGREES = 20.0
ELEVATION_DEGREES = 25.0
FRAME_FILL = 0.9
AMBIENT = 0.35
# in view space: x right, y up, z towards the camera; light from the upper left, in front
LIGHT_DIRECTION = np.array([-0.45, 0.55, 0.7]) / np.linalg.norm([-0.45, 0.55, 0.7])
BACKGROUND = (246, 246, 246)
PLAIN_COLOUR = (0.78, 0.78, 0.78)
FACES_PER_PASS = 200_000
MAX_SAMPLES_PER_PASS = 1_000_000
_EMPTY_KEY = np.iinfo(np.int64).max
_DEPTH_LEVELS = 1 << 30


def render_preview(
    mesh: trimesh.Trimesh, size: int = 512, background: tuple[int, int, int] = BACKGROUND
) -> bytes:
    """Return a size × size PNG of the shaded mesh on a plain background."""
    canvas = np.empty((size * size, 3), dtype=np.uint8)
    canvas[:] = background
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) and np.isfinite(vertices).all():
        view = vertices @ _view_rotation().T
        screen = _fit_to_frame(view[:, :2], size)
        pixels, pixel_faces = _rasterise(screen, view[:, 2], faces, size)
        if len(pixels):
            corner_ids = faces[pixel_faces]
            weights = _barycentric(screen[corner_ids], pixels, size)
            colours = _base_colours(mesh, corner_ids, pixel_faces, weights)
            light = _light(view[corner_ids])
            canvas[pixels] = np.clip(colours * light[:, None] * 255 + 0.5, 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(canvas.reshape(size, size, 3)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _view_rotation() -> np.ndarray:
    """Return the 3 × 3 rotation from world to view space."""
    azimuth, elevation = np.radians(AZIMUTH_DEGREES), np.radians(ELEVATION_DEGREES)
    towards_camera = np.array(
        [
            np.sin(azimuth) * np.cos(elevation),
            np.sin(elevation),
            np.cos(azimuth) * np.cos(elevation),
        ]
    )
    right = np.cross([0.0, 1.0, 0.0], towards_camera)
    right /= np.linalg.norm(right)
    up = np.cross(towards_camera, right)
    return np.stack([right, up, towards_camera])


def _fit_to_frame(points: np.ndarray, size: int) -> np.ndarray:
    """Return pixel coordinates (x right, y down) that centre the points in the frame."""
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float((high - low).max())
    scale = FRAME_FILL * size / extent if extent > 0 else 1.0
    centred = (points - (low + high) / 2) * scale
    return np.column_stack([size / 2 + centred[:, 0], size / 2 - centred[:, 1]])


def _spread(owners: np.ndarray, firsts: np.ndarray, counts: np.ndarray):
    """Return (owner, value) for each of `count` consecutive values from `first`, per owner."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(owners, counts), np.repeat(firsts, counts) + np.arange(total) - starts


def _batches(weights: np.ndarray, limit: int) -> list[slice]:
    """Return consecutive slices whose weights sum to about `limit` (one item may exceed it)."""
    batch_of = np.cumsum(weights) // limit
    bounds = np.concatenate([[0], np.nonzero(np.diff(batch_of))[0] + 1, [len(weights)]])
    return [slice(start, end) for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def _rasterise(screen: np.ndarray, depths: np.ndarray, faces: np.ndarray, size: int):
    """Return the covered pixel indices and the nearest face at each (scanline z-buffer)."""
    # nearer is a larger view z; keys sort the nearest, then the lowest face id, first
    depth_range = float(depths.min()), float(depths.max())
    z_buffer = np.full(size * size, _EMPTY_KEY, dtype=np.int64)
    # passes bound the memory: faces in blocks, then their scanline pairs, then pixel samples
    for first_face in range(0, len(faces), FACES_PER_PASS):
        block = faces[first_face : first_face + FACES_PER_PASS]
        triangles = screen[block]
        edges = _scan_edges(triangles)
        face_ids = np.nonzero(edges.doubled_area > 1e-12)[0]
        first_row = np.maximum(np.ceil(edges.y_top[face_ids] - 0.5), 0).astype(np.int64)
        last_row = np.minimum(np.floor(edges.y_bottom[face_ids] - 0.5), size - 1)
        row_counts = np.maximum(last_row.astype(np.int64) - first_row + 1, 0)
        depth_key = _depth_keys(triangles, depths[block], depth_range, first_face)
        for face_batch in _batches(row_counts, MAX_SAMPLES_PER_PASS):
            owners, rows = _spread(
                face_ids[face_batch], first_row[face_batch], row_counts[face_batch]
            )
            first_col, col_counts = _row_spans(edges, owners, rows, size)
            for pair_batch in _batches(col_counts, MAX_SAMPLES_PER_PASS):
                counts = col_counts[pair_batch]
                sample_owners, cols = _spread(owners[pair_batch], first_col[pair_batch], counts)
                sample_rows = np.repeat(rows[pair_batch], counts)
                keys = depth_key(sample_owners, cols + 0.5, sample_rows + 0.5)
                np.minimum.at(z_buffer, sample_rows * size + cols, keys)
    pixels = np.nonzero(z_buffer != _EMPTY_KEY)[0]
    return pixels, z_buffer[pixels] & 0xFFFFFFFF


class _ScanEdges(NamedTuple):
    """Per face: corners sorted top to bottom, and the x step per row along each edge."""

    x_top: np.ndarray
    y_top: np.ndarray
    x_mid: np.ndarray
    y_mid: np.ndarray
    y_bottom: np.ndarray
    long_slope: np.ndarray  # top to bottom: every scanline of the face crosses it
    upper_slope: np.ndarray  # top to middle
    lower_slope: np.ndarray  # middle to bottom
    doubled_area: np.ndarray


def _scan_edges(triangles: np.ndarray) -> _ScanEdges:
    """Return the scanline view of each screen triangle."""
    order = np.argsort(triangles[:, :, 1], axis=1, kind="stable")
    order += 3 * np.arange(len(triangles))[:, None]
    corners = triangles.reshape(-1, 2)[order.ravel()].reshape(-1, 3, 2)
    (x_top, y_top), (x_mid, y_mid), (x_bottom, y_bottom) = (corners[:, k].T for k in range(3))
    doubled_area = (x_mid - x_top) * (y_bottom - y_top) - (x_bottom - x_top) * (y_mid - y_top)
    return _ScanEdges(
        x_top,
        y_top,
        x_mid,
        y_mid,
        y_bottom,
        _slope(x_bottom - x_top, y_bottom - y_top),
        _slope(x_mid - x_top, y_mid - y_top),
        _slope(x_bottom - x_mid, y_bottom - y_mid),
        np.abs(doubled_area),
    )


def _slope(run: np.ndarray, rise: np.ndarray) -> np.ndarray:
    """Return run / rise, or 0 where an edge is horizontal (no scanline uses it)."""
    return run / np.where(rise > 0, rise, np.inf)


def _row_spans(edges: _ScanEdges, faces: np.ndarray, rows: np.ndarray, size: int):
    """Return the first column and the number of pixel centres of each face on each row."""
    y = rows + 0.5
    x_top, y_top, y_mid = edges.x_top[faces], edges.y_top[faces], edges.y_mid[faces]
    along_long = x_top + (y - y_top) * edges.long_slope[faces]
    along_short = np.where(
        y < y_mid,
        x_top + (y - y_top) * edges.upper_slope[faces],
        edges.x_mid[faces] + (y - y_mid) * edges.lower_slope[faces],
    )
    left = np.minimum(along_long, along_short)
    right = np.maximum(along_long, along_short)
    first_col = np.maximum(np.ceil(left - 0.5), 0).astype(np.int64)
    last_col = np.minimum(np.floor(right - 0.5), size - 1).astype(np.int64)
    return first_col, np.maximum(last_col - first_col + 1, 0)


def _depth_keys(triangles, corner_depths, depth_range: tuple[float, float], first_face: int):
    """Return key(faces, x, y): z-buffer keys of block faces at screen points."""
    x0, y0 = triangles[:, 0].T
    dx1, dy1 = (triangles[:, 1] - triangles[:, 0]).T
    dx2, dy2 = (triangles[:, 2] - triangles[:, 0]).T
    dz1 = corner_depths[:, 1] - corner_depths[:, 0]
    dz2 = corner_depths[:, 2] - corner_depths[:, 0]
    doubled_area = dx1 * dy2 - dx2 * dy1
    safe_area = np.where(np.abs(doubled_area) > 1e-12, doubled_area, np.inf)
    # the depth plane of each face over the screen: z = slope_x·x + slope_y·y + offset
    slope_x = (dz1 * dy2 - dz2 * dy1) / safe_area
    slope_y = (dx1 * dz2 - dx2 * dz1) / safe_area
    offset = corner_depths[:, 0] - slope_x * x0 - slope_y * y0
    low, high = depth_range
    scale = (_DEPTH_LEVELS - 1) / (high - low) if high > low else 0.0

    def key(faces: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        depth = slope_x[faces] * x + slope_y[faces] * y + offset[faces]
        rank = ((high - np.clip(depth, low, high)) * scale).astype(np.int64)
        return (rank << 32) | (faces + first_face)

    return key


def _barycentric(corners: np.ndarray, pixels: np.ndarray, size: int) -> np.ndarray:
    """Return the (n, 3) barycentric weights of each pixel centre in its face."""
    x = pixels % size + 0.5
    y = pixels // size + 0.5
    dx1, dy1 = corners[:, 1, 0] - corners[:, 0, 0], corners[:, 1, 1] - corners[:, 0, 1]
    dx2, dy2 = corners[:, 2, 0] - corners[:, 0, 0], corners[:, 2, 1] - corners[:, 0, 1]
    px, py = x - corners[:, 0, 0], y - corners[:, 0, 1]
    doubled_area = dx1 * dy2 - dx2 * dy1
    second = np.clip((px * dy2 - dx2 * py) / doubled_area, 0.0, 1.0)
    third = np.clip((dx1 * py - px * dy1) / doubled_area, 0.0, 1.0 - second)
    return np.column_stack([1.0 - second - third, second, third])


def _light(corners: np.ndarray) -> np.ndarray:
    """Return ambient plus Lambert light for (n, 3, 3) view-space faces, lit on the camera side."""
    edge_a, edge_b = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    normals = np.cross(edge_a, edge_b)
    lengths = np.sqrt(np.einsum("ij,ij->i", normals, normals))
    facing = np.where(normals[:, 2] < 0, -1.0, 1.0) / np.where(lengths > 0, lengths, 1.0)
    return AMBIENT + (1 - AMBIENT) * np.clip((normals @ LIGHT_DIRECTION) * facing, 0.0, 1.0)


def _base_colours(mesh, corner_ids, pixel_faces, weights) -> np.ndarray:
    """Return (n, 3) colours in [0, 1]: the texture, else vertex or face colours, else grey."""
    visual = mesh.visual
    if visual.kind == "texture":
        # as the glTF export sees it: a simple material's diffuse colour becomes the factor
        material = visual.material
        material = material.to_pbr() if hasattr(material, "to_pbr") else material
        image = getattr(material, "baseColorTexture", None)
        factor = _colour_factor(material)
        uv = visual.uv
        if image is None or uv is None or np.ndim(uv) != 2 or len(uv) != len(mesh.vertices):
            return np.tile(factor, (len(pixel_faces), 1))
        corner_uv = np.nan_to_num(np.asarray(uv, dtype=np.float64)[corner_ids, :2])
        return _sample(image, np.einsum("nk,nkj->nj", weights, corner_uv)) * factor
    if visual.kind == "vertex":
        corner_colours = np.asarray(visual.vertex_colors)[corner_ids, :3] / 255.0
        return np.einsum("nk,nkj->nj", weights, corner_colours)
    if visual.kind == "face":
        return np.asarray(visual.face_colors)[pixel_faces, :3] / 255.0
    return np.tile(PLAIN_COLOUR, (len(pixel_faces), 1))


def _colour_factor(material) -> np.ndarray:
    """Return a material's base colour factor as RGB in [0, 1] (white when it has none)."""
    factor = getattr(material, "baseColorFactor", None)
    if factor is None:
        return np.ones(3)
    return np.asarray(factor, dtype=np.float64).reshape(-1)[:3] / 255.0


def _sample(image: Image.Image, uv: np.ndarray) -> np.ndarray:
    """Return nearest texel colours in [0, 1] at glTF-wrapped UVs (v up, as trimesh holds it)."""
    texels = np.asarray(image.convert("RGB"))
    height, width = texels.shape[:2]
    wrapped = np.where((uv < 0) | (uv > 1), uv - np.floor(uv), uv)
    cols = np.minimum((wrapped[:, 0] * width).astype(np.int64), width - 1)
    rows = np.minimum(((1.0 - wrapped[:, 1]) * height).astype(np.int64), height - 1)
    return texels[rows, cols] / 255.0
