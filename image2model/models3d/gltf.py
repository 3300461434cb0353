"""GLB container checks and loading: the one place that decides whether a GLB is usable."""

import json
import os
import struct
from dataclasses import dataclass

import trimesh
from trimesh.resolvers import ZipResolver
from trimesh.visual import TextureVisuals

GLB_MAGIC = b"glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
MAX_JSON_BYTES = 32 * 1024 * 1024

# Required extensions trimesh applies when it loads a GLB; any other required one (Draco, meshopt,
# KHR_mesh_quantization, KHR_texture_transform, ...) would load as wrong or zero-filled geometry.
# trimesh also decodes KHR_draco_mesh_compression, but only with DracoPy installed, which we don't.
SUPPORTED_REQUIRED_EXTENSIONS = frozenset(
    {"EXT_texture_webp", "KHR_materials_pbrSpecularGlossiness", "KHR_materials_unlit"}
)

_HEADER = struct.Struct("<4sII")
_CHUNK_HEADER = struct.Struct("<II")
_COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
_TYPE_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}


class InvalidModelError(ValueError):
    """The bytes are not a usable GLB."""


class UnsupportedModelError(ValueError):
    """A well-formed GLB that requires glTF extensions we cannot decode."""

    def __init__(self, extensions):
        self.extensions = sorted(extensions)
        super().__init__(f"the model requires unsupported glTF extensions: {self.extensions}")


@dataclass(frozen=True)
class GlbSummary:
    """Triangles and vertices over every placed mesh, and whether any has a base colour texture."""

    faces: int
    vertices: int
    has_texture: bool


def verify_glb(glb_path) -> GlbSummary:
    """Check that the file is a GLB we can convert and return its triangle and vertex counts."""
    scene = load_glb_scene(glb_path)
    faces = vertices = 0
    has_texture = False
    for mesh in mesh_instances(scene):
        faces += len(mesh.faces)
        vertices += len(mesh.vertices)
        has_texture = has_texture or texture_image(mesh) is not None
    return GlbSummary(faces=faces, vertices=vertices, has_texture=has_texture)


def check_glb(glb_path) -> None:
    """Check a GLB's container and document, decoding none of its data (no mesh, no texture)."""
    with open(glb_path, "rb") as glb_file:
        file_size = os.fstat(glb_file.fileno()).st_size
        document, bin_length = _read_container(glb_file, file_size)
    _check_document(document, file_size, bin_length)
    if not _draws_triangles(document):
        raise InvalidModelError("the model has no triangles")


def load_glb_scene(glb_path) -> trimesh.Scene:
    """Check the GLB container and load it with trimesh, reading the binary chunk once."""
    with open(glb_path, "rb") as glb_file:
        file_size = os.fstat(glb_file.fileno()).st_size
        document, bin_length = _read_container(glb_file, file_size)
        _check_document(document, file_size, bin_length)
        glb_file.seek(0)
        try:
            # an empty resolver: a URI can never make trimesh read a file beside the GLB
            scene = trimesh.load_scene(glb_file, file_type="glb", resolver=ZipResolver({}))
        except Exception as exc:
            raise InvalidModelError(f"the glTF content does not load: {exc}") from exc
    if not any(len(mesh.faces) for mesh in mesh_instances(scene)):
        raise InvalidModelError("the model has no triangles")
    return scene


def mesh_instances(scene: trimesh.Scene):
    """Yield the triangle mesh placed by each node of the scene, once per node that places it."""
    for node_name in scene.graph.nodes_geometry:
        _, geometry_name = scene.graph[node_name]
        mesh = scene.geometry[geometry_name]
        if isinstance(mesh, trimesh.Trimesh):
            yield mesh


def texture_image(mesh: trimesh.Trimesh):
    """Return the base colour image of a UV-mapped mesh, or None."""
    visual = mesh.visual
    if not isinstance(visual, TextureVisuals) or visual.uv is None:
        return None
    material = visual.material
    return getattr(material, "baseColorTexture", getattr(material, "image", None))


def _read_container(glb_file, file_size: int) -> tuple[dict, int]:
    """Check the GLB header and chunk layout; return the JSON document and binary chunk length."""
    if file_size == 0:
        raise InvalidModelError("the file is empty")
    header = glb_file.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise InvalidModelError("the file is truncated: no complete GLB header")
    magic, version, declared_length = _HEADER.unpack(header)
    if magic != GLB_MAGIC:
        raise InvalidModelError("not a GLB file: the glTF magic is missing")
    if version != 2:
        raise InvalidModelError(f"glTF version {version} is not supported, only 2")
    if declared_length != file_size:
        raise InvalidModelError(
            f"the file is truncated or padded: the header says {declared_length} bytes, "
            f"the file has {file_size}"
        )
    document = None
    bin_length = None
    offset = _HEADER.size
    while offset < file_size:
        chunk_header = glb_file.read(_CHUNK_HEADER.size)
        if len(chunk_header) < _CHUNK_HEADER.size:
            raise InvalidModelError(f"the file is truncated: partial chunk header at {offset}")
        chunk_length, chunk_type = _CHUNK_HEADER.unpack(chunk_header)
        chunk_end = offset + _CHUNK_HEADER.size + chunk_length
        if chunk_end > file_size:
            raise InvalidModelError(f"the file is truncated: the chunk at {offset} runs past it")
        if document is None:
            document = _parse_json_chunk(glb_file, chunk_type, chunk_length)
        else:
            # the binary chunk is left for trimesh to read: one copy of it in memory
            if chunk_type == CHUNK_BIN and bin_length is None:
                bin_length = chunk_length
            glb_file.seek(chunk_end)
        offset = chunk_end
    if document is None:
        raise InvalidModelError("the file has no JSON chunk")
    return document, bin_length or 0


def _parse_json_chunk(glb_file, chunk_type: int, chunk_length: int) -> dict:
    """Read and parse the JSON chunk at the file position."""
    if chunk_type != CHUNK_JSON:
        raise InvalidModelError("the first chunk is not the JSON chunk")
    if chunk_length > MAX_JSON_BYTES:
        raise InvalidModelError(f"the JSON chunk is larger than {MAX_JSON_BYTES} bytes")
    try:
        document = json.loads(glb_file.read(chunk_length))
    except (ValueError, RecursionError) as exc:
        raise InvalidModelError(f"the JSON chunk does not parse: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidModelError("the JSON chunk is not a glTF object")
    return document


def _check_document(document: dict, file_size: int, bin_length: int) -> None:
    """Reject extensions we cannot honour, external files and data the file cannot hold."""
    required = set(_entries(document, "extensionsRequired", str))
    if unsupported := required - SUPPORTED_REQUIRED_EXTENSIONS:
        raise UnsupportedModelError(unsupported)
    for kind in ("buffers", "images"):
        for index, entry in enumerate(_entries(document, kind, dict)):
            uri = entry.get("uri")
            if uri is not None and not (isinstance(uri, str) and uri.startswith("data:")):
                raise InvalidModelError(f"{kind}[{index}] refers to an external file")
    for index, buffer in enumerate(_entries(document, "buffers", dict)):
        byte_length = buffer.get("byteLength")
        if "uri" not in buffer and not (index == 0 and _is_count(byte_length, bin_length)):
            raise InvalidModelError(f"buffers[{index}] is longer than the binary chunk")
    for index, accessor in enumerate(_entries(document, "accessors", dict)):
        # trimesh fills an accessor without a bufferView with zeros: bound what it allocates
        if "bufferView" not in accessor and _accessor_bytes(accessor) > file_size:
            raise InvalidModelError(f"accessors[{index}] declares more data than the file holds")


def _draws_triangles(document: dict) -> bool:
    """Tell whether any mesh primitive draws triangles (lists or strips) from 3+ points."""
    accessors = _entries(document, "accessors", dict)
    for mesh in _entries(document, "meshes", dict):
        for primitive in _entries(mesh, "primitives", dict):
            attributes = primitive.get("attributes")
            position = attributes.get("POSITION") if isinstance(attributes, dict) else None
            # trimesh loads lists (4) and strips (5); it skips fans (6), points and lines.
            triangles = primitive.get("mode", 4) in (4, 5)
            if triangles and _is_count(position, len(accessors) - 1):
                count = accessors[position].get("count")
                if isinstance(count, int) and count >= 3:
                    return True
    return False


def _entries(document: dict, key: str, entry_type: type) -> list:
    """Return the list at document[key], checking the type of its entries."""
    entries = document.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, entry_type) for e in entries):
        raise InvalidModelError(f"'{key}' is not a list of {entry_type.__name__}")
    return entries


def _is_count(value, upper_bound: int) -> bool:
    """Tell whether value is an integer between 0 and upper_bound."""
    return isinstance(value, int) and 0 <= value <= upper_bound


def _accessor_bytes(accessor: dict) -> int:
    """Return how many bytes an accessor's elements take (0 if malformed: trimesh rejects it)."""
    count, component, kind = (accessor.get(k) for k in ("count", "componentType", "type"))
    if not (isinstance(count, int) and isinstance(component, int) and isinstance(kind, str)):
        return 0
    return count * _COMPONENT_BYTES.get(component, 0) * _TYPE_COMPONENTS.get(kind, 0)
