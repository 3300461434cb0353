"""The files a finished Tripo3D request publishes: a textured GLB and a WEBP preview."""

import functools
import io

import numpy as np
import trimesh
from PIL import Image, ImageDraw

# What `bad_glb` serves instead of a model: the head of an FBX file, which is what Tripo3D
# returns when `quad` is set, so a client that trusts the extension gets a plausible surprise.
NOT_GLTF = b"Kaydara FBX Binary  \x00\x1a\x00" + bytes(64)


@functools.cache
def model_glb() -> bytes:
    """Return a textured unit cube as binary glTF bytes."""
    vertices, uvs, faces = [], [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            normal = np.zeros(3)
            normal[axis] = sign
            tangent = np.zeros(3)
            tangent[(axis + 1) % 3] = 1.0
            bitangent = np.cross(normal, tangent)
            first = len(vertices)
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                vertices.append(0.5 * (normal + a * tangent + b * bitangent))
                uvs.append(((a + 1) / 2, (b + 1) / 2))
            faces += [(first, first + 1, first + 2), (first, first + 2, first + 3)]
    visual = trimesh.visual.TextureVisuals(uv=np.array(uvs), image=_texture())
    mesh = trimesh.Trimesh(
        vertices=np.array(vertices), faces=np.array(faces), visual=visual, process=False
    )
    return mesh.export(file_type="glb")


@functools.cache
def preview_webp() -> bytes:
    """Return a small WEBP picture of a cube, standing in for Tripo3D's rendered preview."""
    image = Image.new("RGB", (128, 128), (236, 236, 236))
    draw = ImageDraw.Draw(image)
    draw.polygon([(64, 16), (112, 40), (64, 64), (16, 40)], fill=(120, 170, 230))
    draw.polygon([(16, 40), (64, 64), (64, 116), (16, 92)], fill=(70, 120, 190))
    draw.polygon([(64, 64), (112, 40), (112, 92), (64, 116)], fill=(40, 80, 150))
    with io.BytesIO() as buffer:
        image.save(buffer, format="WEBP")
        return buffer.getvalue()


def _texture() -> Image.Image:
    """Return a 32x32 gradient texture."""
    ramp = np.arange(32, dtype=np.uint8) * 8
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[..., 0] = ramp[:, None]
    pixels[..., 1] = ramp[None, :]
    pixels[..., 2] = 160
    return Image.fromarray(pixels)
