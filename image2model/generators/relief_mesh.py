"""The relief solid: which grid cells become geometry, how fine the grid is, and its triangles.

The image is divided into a grid of cells. Every cell that is mostly opaque becomes a column of
the solid: two front triangles on a height field sampled at the cell corners, side walls where a
neighbouring cell is missing, and a flat back at z = 0. The back only needs the outline's
vertices, so each row's runs of cells are closed by a strip zipped between the outline vertices
on the run's upper and lower grid lines; its triangle count grows with the outline, not the area.
"""

from math import sqrt
from typing import NamedTuple

import numpy as np
from PIL import Image

ALPHA_THRESHOLD = 128
SMOOTHING_SIGMA_CELLS = 1.0
FLAT_GREY_LEVELS = 0.05  # a smoothed luminance range below this is a flat image
GRID_SEARCH_STEPS = 12
CLOSE_ENOUGH = 0.98


class Topology(NamedTuple):
    """Boolean maps of a cell mask that both the face count and the triangulation use."""

    padded: np.ndarray  # (rows + 2, cols + 2) mask with a border of empty cells
    horizontal_walls: np.ndarray  # (rows + 1, cols) outline edges on horizontal grid lines
    vertical_walls: np.ndarray  # (rows, cols + 1) outline edges on vertical grid lines
    on_outline: np.ndarray  # (rows + 1, cols + 1) grid vertices touching an outline edge
    upper_outline: np.ndarray  # (rows, cols + 1) outline vertex on a run's upper line
    lower_outline: np.ndarray  # (rows, cols + 1) outline vertex on a run's lower line
    run_starts: np.ndarray  # (rows, cols) first cell of each run of cells in a row


def topology(mask: np.ndarray) -> Topology:
    """Return the outline and run maps of a (rows, cols) cell mask."""
    rows, cols = mask.shape
    padded = np.pad(mask, 1)
    horizontal_walls = padded[:-1, 1:-1] != padded[1:, 1:-1]
    vertical_walls = padded[1:-1, :-1] != padded[1:-1, 1:]
    on_outline = np.zeros((rows + 1, cols + 1), dtype=bool)
    on_outline[:, :-1] |= horizontal_walls
    on_outline[:, 1:] |= horizontal_walls
    on_outline[:-1, :] |= vertical_walls
    on_outline[1:, :] |= vertical_walls
    # a vertex lies in the closed x range of a run of row j when a cell beside it is in the mask
    in_run = padded[1:-1, :-1] | padded[1:-1, 1:]
    run_starts = mask & ~padded[1:-1, :-2]
    return Topology(
        padded,
        horizontal_walls,
        vertical_walls,
        on_outline,
        in_run & on_outline[:-1],
        in_run & on_outline[1:],
        run_starts,
    )


def count_faces(mask: np.ndarray) -> int:
    """Return how many triangles build_solid makes for this cell mask."""
    maps = topology(mask)
    front = 2 * int(mask.sum())
    walls = 2 * int(maps.horizontal_walls.sum() + maps.vertical_walls.sum())
    # a strip between n upper and m lower vertices takes n + m - 2 triangles
    back = int(maps.upper_outline.sum() + maps.lower_outline.sum() - 2 * maps.run_starts.sum())
    return front + walls + back


def cell_mask(alpha: Image.Image | None, cols: int, rows: int) -> np.ndarray:
    """Return which cells of a cols × rows grid are mostly opaque, with no corner-only contacts."""
    if alpha is None:
        return np.ones((rows, cols), dtype=bool)
    opacity = np.asarray(alpha.resize((cols, rows), Image.Resampling.BOX), dtype=np.float32)
    return remove_pinches(opacity >= ALPHA_THRESHOLD, opacity)


def remove_pinches(mask: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """Drop cells until no two cells touch only at a corner, which would pinch the surface."""
    mask = mask.copy()
    while True:
        top_left, top_right = mask[:-1, :-1], mask[:-1, 1:]
        bottom_left, bottom_right = mask[1:, :-1], mask[1:, 1:]
        main = top_left & bottom_right & ~top_right & ~bottom_left
        anti = top_right & bottom_left & ~top_left & ~bottom_right
        if not (main.any() or anti.any()):
            return mask
        # of each touching pair, the less opaque cell goes (the top one on a tie)
        drop = np.zeros_like(mask)
        drop_top_left = main & (opacity[:-1, :-1] <= opacity[1:, 1:])
        drop[:-1, :-1] |= drop_top_left
        drop[1:, 1:] |= main & ~drop_top_left
        drop_top_right = anti & (opacity[:-1, 1:] <= opacity[1:, :-1])
        drop[:-1, 1:] |= drop_top_right
        drop[1:, :-1] |= anti & ~drop_top_right
        mask &= ~drop


def choose_mask(alpha: Image.Image | None, image_size: tuple[int, int], face_limit: int):
    """Return the finest cell mask, at the image's aspect ratio, whose solid fits face_limit."""
    width, height = image_size
    longest = max(width, height)

    def mask_for(cells_along_longest: int) -> np.ndarray:
        cols = max(1, round(cells_along_longest * width / longest))
        rows = max(1, round(cells_along_longest * height / longest))
        return cell_mask(alpha, cols, rows)

    opaque_share = 1.0
    if alpha is not None:
        opaque_share = max(float(np.mean(np.asarray(alpha) >= ALPHA_THRESHOLD)), 1e-3)
    # a full rectangle of n × m cells takes about 2·n·m + 6·(n + m) faces: start there
    area_term = 2 * opaque_share * width * height / longest**2
    edge_term = 6 * (width + height) / longest
    root = (-edge_term + sqrt(edge_term**2 + 4 * area_term * face_limit)) / (2 * area_term)
    cells = min(max(int(root), 1), longest)
    fits, too_many = 0, longest + 1
    best = mask_for(1)
    for _ in range(GRID_SEARCH_STEPS):
        mask = mask_for(cells)
        faces = count_faces(mask)
        if faces <= face_limit:
            fits, best = cells, mask
            if faces >= CLOSE_ENOUGH * face_limit:
                break
        else:
            too_many = cells
        if too_many - fits <= 1:
            break
        # faces grow with the square of the resolution
        guess = int(cells * sqrt(face_limit / max(faces, 1)))
        cells = min(max(guess, fits + 1), too_many - 1)
    return best


def vertex_heights(luminance: Image.Image, mask: np.ndarray, invert: bool) -> np.ndarray:
    """Return (rows + 1, cols + 1) corner heights in [0, 1] from smoothed, stretched luminance."""
    rows, cols = mask.shape
    cells = np.asarray(luminance.resize((cols, rows), Image.Resampling.BOX), dtype=np.float32)
    weight = mask.astype(np.float32)
    # a blur weighted by the mask: pixels outside the subject do not bleed into its edge
    weighted_sum = _corner_sum(_blur(cells * weight))
    weight_sum = _corner_sum(_blur(weight))
    heights = np.divide(
        weighted_sum, weight_sum, out=np.zeros_like(weighted_sum), where=weight_sum > 0
    )
    used = _corner_sum(weight) > 0
    low, high = float(heights[used].min()), float(heights[used].max())
    if high - low < FLAT_GREY_LEVELS:
        return np.ones_like(heights)
    heights = np.clip((heights - low) / (high - low), 0.0, 1.0)
    return 1.0 - heights if invert else heights


def _blur(values: np.ndarray) -> np.ndarray:
    """Return a separable Gaussian blur of a 2-D array, treating outside cells as zero."""
    radius = max(1, round(3 * SMOOTHING_SIGMA_CELLS))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / SMOOTHING_SIGMA_CELLS) ** 2)
    taps /= taps.sum()
    rows, cols = values.shape
    padded = np.pad(values, ((radius, radius), (0, 0)))
    values = sum(tap * padded[offset : offset + rows] for offset, tap in enumerate(taps))
    padded = np.pad(values, ((0, 0), (radius, radius)))
    return sum(tap * padded[:, offset : offset + cols] for offset, tap in enumerate(taps))


def _corner_sum(values: np.ndarray) -> np.ndarray:
    """Return, for each grid corner, the sum of the up to four cells around it."""
    padded = np.pad(values, 1)
    return padded[:-1, :-1] + padded[:-1, 1:] + padded[1:, :-1] + padded[1:, 1:]


def build_solid(
    mask: np.ndarray,
    heights: np.ndarray,
    size_m: tuple[float, float],
    base_m: float,
    depth_m: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return vertices (metres), faces and UVs of the closed solid over the masked cells."""
    rows, cols = mask.shape
    maps = topology(mask)
    used = _corner_sum(mask.astype(np.int8)) > 0
    front_rows, front_cols = np.nonzero(used)
    back_rows, back_cols = np.nonzero(maps.on_outline)
    front_count, back_count = len(front_rows), len(back_rows)
    front_id = np.full(used.shape, -1, dtype=np.int64)
    front_id[used] = np.arange(front_count)
    back_id = np.full(used.shape, -1, dtype=np.int64)
    back_id[maps.on_outline] = np.arange(front_count, front_count + back_count)

    grid_rows = np.concatenate([front_rows, back_rows])
    grid_cols = np.concatenate([front_cols, back_cols])
    z = np.zeros(front_count + back_count)
    z[:front_count] = base_m + depth_m * heights[front_rows, front_cols]
    width_m, height_m = size_m
    vertices = np.column_stack(
        [(grid_cols / cols - 0.5) * width_m, (0.5 - grid_rows / rows) * height_m, z]
    )
    uv = np.column_stack([grid_cols / cols, 1.0 - grid_rows / rows])
    faces = np.concatenate(
        [
            _front_faces(mask, front_id),
            _wall_faces(maps, front_id, back_id),
            _back_faces(maps, back_id),
        ]
    )
    return vertices, faces, uv


def _front_faces(mask: np.ndarray, front_id: np.ndarray) -> np.ndarray:
    """Return two counter-clockwise (seen from +z) triangles per masked cell."""
    rows, cols = np.nonzero(mask)
    top_left, top_right = front_id[rows, cols], front_id[rows, cols + 1]
    bottom_left, bottom_right = front_id[rows + 1, cols], front_id[rows + 1, cols + 1]
    first = np.column_stack([top_left, bottom_left, bottom_right])
    second = np.column_stack([top_left, bottom_right, top_right])
    return np.stack([first, second], axis=1).reshape(-1, 3)


def _wall_faces(maps: Topology, front_id: np.ndarray, back_id: np.ndarray) -> np.ndarray:
    """Return two triangles per outline edge, joining the front edge to the back edge below it."""
    padded = maps.padded
    mask = padded[1:-1, 1:-1]
    # the neighbour that must be missing, then the front edge u -> v as the front triangles run it,
    # given as (row, col) offsets from the cell's top-left corner
    sides = [
        (padded[:-2, 1:-1], (0, 1), (0, 0)),  # above
        (padded[1:-1, :-2], (0, 0), (1, 0)),  # left
        (padded[2:, 1:-1], (1, 0), (1, 1)),  # below
        (padded[1:-1, 2:], (1, 1), (0, 1)),  # right
    ]
    walls = []
    for neighbour, (u_row, u_col), (v_row, v_col) in sides:
        rows, cols = np.nonzero(mask & ~neighbour)
        u_front, u_back = front_id[rows + u_row, cols + u_col], back_id[rows + u_row, cols + u_col]
        v_front, v_back = front_id[rows + v_row, cols + v_col], back_id[rows + v_row, cols + v_col]
        # the wall runs the shared edge v -> u, the reverse of the front, so windings agree
        first = np.column_stack([v_front, u_front, u_back])
        second = np.column_stack([v_front, u_back, v_back])
        walls.append(np.stack([first, second], axis=1).reshape(-1, 3))
    return np.concatenate(walls)


def _back_faces(maps: Topology, back_id: np.ndarray) -> np.ndarray:
    """Return the back (facing -z): per run of cells, a strip zipped between its two lines."""
    cell_run = (np.cumsum(maps.run_starts.ravel()) - 1).reshape(maps.run_starts.shape)
    # a vertex belongs to the run of the masked cell on its left, else of the one on its right
    padded_run = np.pad(cell_run, ((0, 0), (1, 1)))
    run_id = np.where(maps.padded[1:-1, :-1], padded_run[:, :-1], padded_run[:, 1:])
    upper_rows, upper_cols = np.nonzero(maps.upper_outline)
    lower_rows, lower_cols = np.nonzero(maps.lower_outline)
    run = np.concatenate([run_id[upper_rows, upper_cols], run_id[lower_rows, lower_cols]])
    col = np.concatenate([upper_cols, lower_cols])
    on_lower = np.concatenate([np.zeros(len(upper_rows), bool), np.ones(len(lower_rows), bool)])
    vertex = np.concatenate([back_id[upper_rows, upper_cols], back_id[lower_rows + 1, lower_cols]])
    order = np.lexsort((on_lower, col, run))
    run, on_lower, vertex = run[order], on_lower[order], vertex[order]

    position = np.arange(len(order))
    last_upper = np.maximum.accumulate(np.where(on_lower, -1, position))
    last_lower = np.maximum.accumulate(np.where(on_lower, position, -1))
    # each run opens with its two left-end vertices; every later vertex adds one triangle
    opens = np.ones(len(order), dtype=bool)
    opens[1:] = run[1:] != run[:-1]
    opens[1:] |= opens[:-1].copy()
    new = position[~opens]
    lower = on_lower[new]
    previous_upper = vertex[last_upper[new - 1]]
    previous_lower = vertex[last_lower[new - 1]]
    # wound clockwise seen from +z, so that the back faces -z
    second = np.where(lower, previous_upper, vertex[new])
    third = np.where(lower, vertex[new], previous_lower)
    first = np.where(lower, previous_lower, previous_upper)
    return np.column_stack([first, second, third])
