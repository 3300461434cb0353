import io
import struct
import zipfile

import numpy as np
import pytest
import trimesh
from PIL import Image

from image2model.models3d.convert import (
    FORMATS,
    UNITS,
    InvalidModelError,
    UnsupportedModelError,
    convert_glb,
    verify_glb,
)
from image2model.models3d.gltf import check_glb
from tests.helpers import embedded_image, glb_with_document, glb_with_json, load_converted


def textured_mesh(seed=0, image_format="PNG"):
    """Return an icosphere with spherical UVs and a small random texture."""
    sphere = trimesh.creation.icosphere(subdivisions=1)
    x, y, z = sphere.vertices.T
    uv = np.column_stack((np.arctan2(y, x) / (2 * np.pi) + 0.5, np.arccos(z) / np.pi))
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format=image_format)
    # trimesh writes a JPEG texture into the GLB as JPEG, anything else as PNG
    image = Image.open(encoded)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image)
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(sphere.vertices, sphere.faces, visual=visual, process=False)


def coloured_mesh():
    """Return a box with a distinct colour per vertex."""
    box = trimesh.creation.box(extents=(0.2, 0.3, 0.4))
    colours = np.random.default_rng(1).integers(0, 256, (len(box.vertices), 4), dtype=np.uint8)
    colours[:, 3] = 255
    return trimesh.Trimesh(box.vertices, box.faces, vertex_colors=colours, process=False)


def two_node_scene():
    """Return two differently textured meshes, one moved, rotated and mirrored by its node."""
    scene = trimesh.Scene()
    scene.add_geometry(textured_mesh(seed=1), node_name="left")
    moved = trimesh.transformations.rotation_matrix(0.7, (0, 0, 1))
    moved[:3, :3] *= (2.0, -1.0, 0.5)  # a negative scale mirrors
    moved[:3, 3] = (3.0, 1.0, -2.0)
    scene.add_geometry(textured_mesh(seed=2), node_name="right", transform=moved)
    return scene


MODELS = {"textured": textured_mesh, "coloured": coloured_mesh, "scene": two_node_scene}


@pytest.fixture(params=sorted(MODELS))
def model_glb(request, tmp_path):
    glb_path = tmp_path / f"{request.param}.glb"
    glb_path.write_bytes(MODELS[request.param]().export(file_type="glb"))
    return glb_path


@pytest.fixture
def textured_glb(tmp_path):
    glb_path = tmp_path / "textured.glb"
    glb_path.write_bytes(textured_mesh().export(file_type="glb"))
    return glb_path


def reference_mesh(glb_path):
    """Load a GLB the plain trimesh way, transforms applied."""
    return trimesh.load_scene(glb_path).to_mesh()


def converted(glb_path, fmt, tmp_path, **options):
    """Convert glb_path to fmt and return the output file's path."""
    out_path = tmp_path / f"out.{FORMATS[fmt][0]}"
    with open(out_path, "wb") as out_file:
        convert_glb(glb_path, fmt, out_file, **options)
    return out_path


def test_formats_and_units_are_declared():
    assert set(FORMATS) == {"glb", "obj", "ply", "stl"}
    assert FORMATS["obj"] == ("zip", "application/zip")
    assert FORMATS["glb"] == ("glb", "model/gltf-binary")
    assert UNITS == ("mm", "cm", "m", "in")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_keeps_faces_and_placement(model_glb, fmt, tmp_path):
    reference = reference_mesh(model_glb)
    loaded = load_converted(converted(model_glb, fmt, tmp_path, units="m"), tmp_path).to_mesh()
    assert len(loaded.faces) == len(reference.faces) == verify_glb(model_glb).faces
    np.testing.assert_allclose(loaded.bounds, reference.bounds, atol=1e-5)


@pytest.mark.parametrize("fmt", ["ply", "stl"])
def test_node_transforms_are_baked_triangle_by_triangle(tmp_path, fmt):
    glb_path = tmp_path / "scene.glb"
    glb_path.write_bytes(two_node_scene().export(file_type="glb"))
    loaded = trimesh.load_mesh(converted(glb_path, fmt, tmp_path, units="m"), process=False)
    reference = reference_mesh(glb_path)
    np.testing.assert_allclose(loaded.triangles, reference.triangles, atol=1e-5)
    # the mirrored node keeps its outside out
    np.testing.assert_allclose(loaded.face_normals, reference.face_normals, atol=1e-4)


@pytest.mark.parametrize("image_format, extension", [("PNG", "png"), ("JPEG", "jpg")])
def test_obj_zip_holds_obj_mtl_and_the_original_texture(tmp_path, image_format, extension):
    textured_glb = tmp_path / "textured.glb"
    textured_glb.write_bytes(textured_mesh(image_format=image_format).export(file_type="glb"))
    out_path = converted(textured_glb, "obj", tmp_path, name="chair")
    texture_name = f"chair.{extension}"
    with zipfile.ZipFile(out_path) as archive:
        assert sorted(archive.namelist()) == sorted(["chair.mtl", "chair.obj", texture_name])
        obj_text = archive.read("chair.obj").decode()
        mtl_text = archive.read("chair.mtl").decode()
        texture_bytes = archive.read(texture_name)
    assert obj_text.startswith("mtllib chair.mtl\n")
    assert f"map_Kd {texture_name}" in mtl_text.splitlines()
    # not re-encoded: a JPEG would lose quality again
    assert texture_bytes == embedded_image(textured_glb.read_bytes(), 0)

    mesh = load_converted(out_path, tmp_path).to_mesh()
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals)
    assert mesh.visual.material.image.size == (16, 16)


def test_obj_zip_of_a_scene_keeps_one_texture_per_mesh(tmp_path):
    glb_path = tmp_path / "scene.glb"
    glb_path.write_bytes(two_node_scene().export(file_type="glb"))
    with zipfile.ZipFile(converted(glb_path, "obj", tmp_path, name="pair")) as archive:
        names = sorted(archive.namelist())
        mtl_text = archive.read("pair.mtl").decode()
    assert names == ["pair.mtl", "pair.obj", "pair.png", "pair_1.png"]
    assert "map_Kd pair.png" in mtl_text and "map_Kd pair_1.png" in mtl_text
    loaded = load_converted(tmp_path / "out.zip", tmp_path)
    images = [mesh.visual.material.image for mesh in loaded.geometry.values()]
    assert len(images) == 2 and all(image is not None for image in images)


@pytest.mark.parametrize(
    "name, expected", [("../../etc/evil name", "etc_evil_name"), ("椅子", "椅子"), ("..", "model")]
)
def test_obj_member_names_are_safe(textured_glb, tmp_path, name, expected):
    with zipfile.ZipFile(converted(textured_glb, "obj", tmp_path, name=name)) as archive:
        assert f"{expected}.obj" in archive.namelist()


@pytest.mark.parametrize(
    "units, per_metre", [("mm", 1000), ("cm", 100), ("m", 1), ("in", 1000 / 25.4)]
)
def test_stl_is_scaled_to_units(textured_glb, tmp_path, units, per_metre):
    loaded = trimesh.load_mesh(converted(textured_glb, "stl", tmp_path, units=units))
    np.testing.assert_allclose(
        loaded.bounds, reference_mesh(textured_glb).bounds * per_metre, rtol=1e-6
    )


def test_stl_defaults_to_millimetres(textured_glb, tmp_path):
    loaded = trimesh.load_mesh(converted(textured_glb, "stl", tmp_path))
    np.testing.assert_allclose(
        loaded.extents, reference_mesh(textured_glb).extents * 1000, rtol=1e-6
    )


def test_ply_keeps_vertex_colours(tmp_path):
    mesh = coloured_mesh()
    glb_path = tmp_path / "coloured.glb"
    glb_path.write_bytes(mesh.export(file_type="glb"))
    loaded = trimesh.load_mesh(converted(glb_path, "ply", tmp_path), process=False)
    np.testing.assert_array_equal(loaded.visual.vertex_colors, mesh.visual.vertex_colors)


def test_ply_keeps_uvs_of_a_textured_mesh(textured_glb, tmp_path):
    loaded = trimesh.load_mesh(converted(textured_glb, "ply", tmp_path), process=False)
    np.testing.assert_allclose(loaded.visual.uv, textured_mesh().visual.uv, atol=1e-6)


def test_glb_is_copied_byte_for_byte(textured_glb, tmp_path):
    assert converted(textured_glb, "glb", tmp_path).read_bytes() == textured_glb.read_bytes()


def test_verify_glb_counts_faces_vertices_and_texture(textured_glb, tmp_path):
    summary = verify_glb(textured_glb)
    assert (summary.faces, summary.vertices, summary.has_texture) == (80, 42, True)
    coloured_path = tmp_path / "coloured.glb"
    coloured_path.write_bytes(coloured_mesh().export(file_type="glb"))
    assert verify_glb(coloured_path).has_texture is False


def external_image(document):
    document["images"][0] = {"uri": "../secret.png"}


def no_meshes(document):
    document["nodes"] = [{"name": "empty"}]
    del document["meshes"]


def long_buffer(document):
    document["buffers"][0]["byteLength"] += 64


def zero_filled_accessor(document):
    document["accessors"][0] = {"componentType": 5126, "type": "VEC3", "count": 10**9}


def with_length(glb, length):
    return glb[:8] + struct.pack("<I", length) + glb[12:length]


BROKEN_GLBS = {
    "empty": (lambda glb: b"", "empty"),
    "bad magic": (lambda glb: b"gLTF" + glb[4:], "magic"),
    "glTF 1": (lambda glb: glb[:4] + struct.pack("<I", 1) + glb[8:], "version 1"),
    "truncated": (lambda glb: glb[:-100], "header says"),
    "padded": (lambda glb: glb + bytes(4), "header says"),
    "chunk past the end": (lambda glb: with_length(glb, len(glb) - 100), "runs past"),
    "partial chunk header": (lambda glb: with_length(glb, 16), "partial chunk header"),
    "broken JSON": (lambda glb: glb_with_json(glb, b'{"asset": '), "does not parse"),
    "JSON array": (lambda glb: glb_with_json(glb, b"[]"), "not a glTF object"),
    "external image": (lambda glb: glb_with_document(glb, external_image), "external file"),
    "buffer past BIN": (lambda glb: glb_with_document(glb, long_buffer), "binary chunk"),
    "accessor bomb": (lambda glb: glb_with_document(glb, zero_filled_accessor), "more data"),
    "no triangles": (lambda glb: glb_with_document(glb, no_meshes), "no triangles"),
}


@pytest.mark.parametrize("check", [verify_glb, check_glb])  # check_glb loads nothing
@pytest.mark.parametrize("case", sorted(BROKEN_GLBS))
def test_broken_files_are_rejected_by_each_check(textured_glb, tmp_path, case, check):
    make_broken, message = BROKEN_GLBS[case]
    broken_path = tmp_path / "broken.glb"
    broken_path.write_bytes(make_broken(textured_glb.read_bytes()))
    with pytest.raises(InvalidModelError, match=message):
        check(broken_path)
    with pytest.raises(InvalidModelError), open(tmp_path / "out.zip", "wb") as out_file:
        convert_glb(broken_path, "obj", out_file)


@pytest.mark.parametrize(
    "mode, loads", [(None, True), (4, True), (5, True), (6, False), (0, False), (1, False)]
)
def test_check_glb_accepts_the_primitive_modes_trimesh_loads(textured_glb, tmp_path, mode, loads):
    def with_mode(document):
        for mesh in document["meshes"]:
            for primitive in mesh["primitives"]:
                primitive.pop("mode", None)
                if mode is not None:
                    primitive["mode"] = mode  # 0 points, 1 lines, 4 lists, 5 strips, 6 fans

    patched_path = tmp_path / "patched.glb"
    patched_path.write_bytes(glb_with_document(textured_glb.read_bytes(), with_mode))
    if loads:
        check_glb(patched_path)
        assert verify_glb(patched_path).faces > 0
    else:
        with pytest.raises(InvalidModelError, match="no triangles"):
            check_glb(patched_path)
        with pytest.raises(InvalidModelError, match="no triangles"):
            verify_glb(patched_path)


@pytest.mark.parametrize("check", [verify_glb, check_glb])
@pytest.mark.parametrize(
    "extension", ["KHR_draco_mesh_compression", "EXT_meshopt_compression", "KHR_mesh_quantization"]
)
def test_required_extensions_we_cannot_decode_are_unsupported(
    textured_glb, tmp_path, extension, check
):
    def require(document):
        document["extensionsUsed"] = document["extensionsRequired"] = [extension]

    patched_path = tmp_path / "compressed.glb"
    patched_path.write_bytes(glb_with_document(textured_glb.read_bytes(), require))
    with pytest.raises(UnsupportedModelError) as raised:
        check(patched_path)
    assert raised.value.extensions == [extension]
    assert isinstance(raised.value, ValueError)


def test_a_supported_required_extension_is_accepted(textured_glb, tmp_path):
    def require(document):
        document["extensionsUsed"] = document["extensionsRequired"] = ["KHR_materials_unlit"]

    patched_path = tmp_path / "unlit.glb"
    patched_path.write_bytes(glb_with_document(textured_glb.read_bytes(), require))
    assert verify_glb(patched_path).faces == 80


@pytest.mark.parametrize("options", [{"fmt": "fbx"}, {"fmt": "obj", "units": "km"}])
def test_convert_rejects_unknown_format_or_units(textured_glb, options):
    out_file = io.BytesIO()
    fmt = options.pop("fmt")
    with pytest.raises(ValueError, match="unknown"):
        convert_glb(textured_glb, fmt, out_file, **options)
    assert out_file.getvalue() == b""
