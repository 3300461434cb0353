"""Convert a stored GLB to the download formats: GLB, OBJ (zipped with its textures), PLY and STL.

Every format keeps the GLB's triangles one for one, with each node's transform applied. OBJ, PLY
and GLB stay in glTF's metres; `units` scales STL only, since slicers read STL as millimetres.
"""

import io
import shutil
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import PIL.Image
import trimesh
from trimesh.exchange.ply import export_ply
from trimesh.exchange.stl import export_stl
from trimesh.visual.color import to_float, to_rgba
from trimesh.visual.material import PBRMaterial

from .gltf import (
    GlbSummary,
    InvalidModelError,
    UnsupportedModelError,
    load_glb_scene,
    texture_image,
    verify_glb,
)

__all__ = [
    "FORMATS",
    "UNITS",
    "GlbSummary",
    "InvalidModelError",
    "UnsupportedModelError",
    "convert_glb",
    "verify_glb",
]

# format -> (file extension of the download, MIME type); PLY has no registered media type
FORMATS = {
    "glb": ("glb", "model/gltf-binary"),
    "obj": ("zip", "application/zip"),
    "ply": ("ply", "application/octet-stream"),
    "stl": ("stl", "model/stl"),
}
UNITS = ("mm", "cm", "m", "in")
UNITS_PER_METRE = {"mm": 1000.0, "cm": 100.0, "m": 1.0, "in": 1000.0 / 25.4}

# float32 positions carry about 7 significant digits; more would only lengthen the OBJ text
_FLOAT = "%.7g"
_TEXTURE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png"}


@dataclass
class _Part:
    """One placed mesh: arrays in world space (metres), optional per-vertex attributes."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None
    uv: np.ndarray | None
    colors: np.ndarray | None
    texture: PIL.Image.Image | None
    diffuse: tuple[float, float, float] | None


def convert_glb(
    glb_path, fmt: str, out_file: BinaryIO, *, units: str = "mm", name: str = "model"
) -> None:
    """Write the GLB at glb_path to out_file in format fmt; name is the base name of OBJ members."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}, expected one of {sorted(FORMATS)}")
    if units not in UNITS:
        raise ValueError(f"unknown units {units!r}, expected one of {list(UNITS)}")
    if fmt == "glb":
        with open(glb_path, "rb") as glb_file:
            shutil.copyfileobj(glb_file, out_file, 1024 * 1024)
        return
    parts = _placed_parts(load_glb_scene(glb_path))
    if fmt == "obj":
        _write_obj_zip(parts, out_file, _member_base_name(name))
    elif fmt == "ply":
        _write_ply(parts, out_file)
    else:
        _write_stl(parts, out_file, UNITS_PER_METRE[units])


def _placed_parts(scene: trimesh.Scene) -> list[_Part]:
    """Apply each node's transform to its mesh, without copying textures or recomputing normals."""
    parts = []
    for node_name in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node_name]
        mesh = scene.geometry[geometry_name]
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            continue
        rotation = transform[:3, :3]
        determinant = np.linalg.det(rotation)
        # a mirroring transform turns the winding, and so the outside, inside out
        faces = mesh.faces[:, ::-1] if determinant < 0 else mesh.faces
        normals = None
        # only normals stored in the GLB: computing them costs time and logs without scipy
        if "vertex_normals" in mesh._cache and determinant != 0:
            normals = trimesh.util.unitize(mesh.vertex_normals @ np.linalg.inv(rotation))
        visual = mesh.visual
        colors = visual.vertex_colors if visual.kind == "vertex" else None
        uv = texture = diffuse = None
        if isinstance(visual, trimesh.visual.TextureVisuals):
            uv = visual.uv
            texture = texture_image(mesh)
            diffuse = _diffuse(visual.material)
            if "color" in visual.vertex_attributes:
                colors = to_rgba(visual.vertex_attributes["color"])
        vertices = mesh.vertices @ rotation.T + transform[:3, 3]
        parts.append(_Part(vertices, faces, normals, uv, colors, texture, diffuse))
    return parts


def _diffuse(material) -> tuple[float, float, float]:
    """Return a material's base colour as RGB floats."""
    if isinstance(material, PBRMaterial):
        # glTF's default base colour is white, not trimesh's grey
        rgba = material.baseColorFactor
    else:
        rgba = getattr(material, "diffuse", None)
    return (1.0, 1.0, 1.0) if rgba is None else tuple(to_float(rgba)[:3].round(6).tolist())


def _member_base_name(name: str) -> str:
    """Return name reduced to characters that are safe in a ZIP member and an OBJ reference."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return safe.strip("_") or "model"


def _write_obj_zip(parts: list[_Part], out_file: BinaryIO, base_name: str) -> None:
    """Write a ZIP holding base_name.obj, base_name.mtl and the textures they reference."""
    texture_members: dict[int, str] = {}
    texture_files: dict[str, bytes] = {}
    material_names: dict[tuple, str] = {}
    mtl_blocks = []
    part_materials = []
    for part in parts:
        if part.diffuse is None:
            part_materials.append(None)
            continue
        texture_member = None
        if part.texture is not None and part.uv is not None:
            texture_member = texture_members.get(id(part.texture))
            if texture_member is None:
                extension, texture_bytes = _texture_file(part.texture)
                suffix = f"_{len(texture_files)}" if texture_files else ""
                texture_member = f"{base_name}{suffix}.{extension}"
                texture_members[id(part.texture)] = texture_member
                texture_files[texture_member] = texture_bytes
        key = (texture_member, part.diffuse)
        if key not in material_names:
            material_names[key] = f"material_{len(material_names)}"
            block = [
                f"newmtl {material_names[key]}",
                "Kd {:.6g} {:.6g} {:.6g}".format(*part.diffuse),
            ]
            if texture_member is not None:
                block.append(f"map_Kd {texture_member}")
            mtl_blocks.append("\n".join(block) + "\n")
        part_materials.append(material_names[key])

    with zipfile.ZipFile(out_file, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open(f"{base_name}.obj", "w") as obj_member:
            if mtl_blocks:
                obj_member.write(f"mtllib {base_name}.mtl\n".encode())
            for chunk in _obj_chunks(parts, part_materials):
                obj_member.write(chunk.encode())
        if mtl_blocks:
            archive.writestr(f"{base_name}.mtl", "\n".join(mtl_blocks))
        for member, texture_bytes in texture_files.items():
            # PNG and JPEG are compressed already
            archive.writestr(member, texture_bytes, compress_type=zipfile.ZIP_STORED)


def _texture_file(image) -> tuple[str, bytes]:
    """Return the file extension and bytes of a texture, as stored in the GLB where possible."""
    extension = _TEXTURE_EXTENSIONS.get(image.format)
    # Pillow keeps the stream of an image it has not decoded: the GLB's own bytes, so JPEG
    # textures are not re-encoded (lossy) and PNG ones not re-compressed (slow)
    stream = getattr(image, "fp", None)
    if extension is not None and isinstance(stream, io.BytesIO):
        return extension, stream.getvalue()
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    return "png", encoded.getvalue()


def _obj_chunks(parts: list[_Part], part_materials: list[str | None]):
    """Yield the OBJ text of each part, one element kind at a time."""
    counts = {"v": 0, "vt": 0, "vn": 0}
    for index, (part, material_name) in enumerate(zip(parts, part_materials, strict=True)):
        yield f"o part_{index}\n"
        if part.colors is not None:
            colored = np.column_stack((part.vertices, part.colors[:, :3] / 255.0))
            yield _rows("v", colored)
        else:
            yield _rows("v", part.vertices)
        corners = [part.faces + 1 + counts["v"]]
        corner_format = "%d"
        if part.uv is not None:
            yield _rows("vt", part.uv)
            corners.append(part.faces + 1 + counts["vt"])
            corner_format += "/%d"
            counts["vt"] += len(part.uv)
        if part.normals is not None:
            yield _rows("vn", part.normals)
            corners.append(part.faces + 1 + counts["vn"])
            corner_format += "/%d" if len(corners) == 3 else "//%d"
            counts["vn"] += len(part.normals)
        counts["v"] += len(part.vertices)
        if material_name is not None:
            yield f"usemtl {material_name}\n"
        # one value per corner and element kind, in the order the corner format names them
        indices = np.stack(corners, axis=-1).ravel().tolist()
        face_format = "f " + " ".join([corner_format] * 3) + "\n"
        yield (face_format * len(part.faces)) % tuple(indices)


def _rows(keyword: str, values: np.ndarray) -> str:
    """Format an (n, k) float array as n OBJ lines starting with keyword."""
    row_format = keyword + (" " + _FLOAT) * values.shape[1] + "\n"
    return (row_format * len(values)) % tuple(values.ravel().tolist())


def _stacked(arrays: list) -> np.ndarray | None:
    """Concatenate per-part arrays, or return None unless every part has one."""
    if not arrays or any(a is None for a in arrays):
        return None
    return np.concatenate(arrays)


def _merged_arrays(parts: list[_Part]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the parts' vertices and faces into one indexed triangle list."""
    offsets = np.cumsum([0] + [len(part.vertices) for part in parts])
    faces = [part.faces + offset for part, offset in zip(parts, offsets[:-1], strict=True)]
    return np.concatenate([part.vertices for part in parts]), np.concatenate(faces)


def _write_ply(parts: list[_Part], out_file: BinaryIO) -> None:
    """Write a binary PLY with normals, vertex colours and UVs (s, t) where every part has them."""
    vertices, faces = _merged_arrays(parts)
    normals = _stacked([part.normals for part in parts])
    mesh = trimesh.Trimesh(
        vertices=vertices,
        faces=faces,
        vertex_normals=normals,
        vertex_colors=_stacked([part.colors for part in parts]),
        process=False,
    )
    uv = _stacked([part.uv for part in parts])
    if uv is not None:
        mesh.vertex_attributes["s"] = uv[:, 0].astype(np.float32)
        mesh.vertex_attributes["t"] = uv[:, 1].astype(np.float32)
    out_file.write(export_ply(mesh, encoding="binary", vertex_normal=normals is not None))


def _write_stl(parts: list[_Part], out_file: BinaryIO, scale: float) -> None:
    """Write a binary STL with coordinates multiplied by scale."""
    vertices, faces = _merged_arrays(parts)
    mesh = trimesh.Trimesh(vertices=vertices * scale, faces=faces, process=False)
    out_file.write(export_stl(mesh))
