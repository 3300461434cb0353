"""Test images made in memory with Pillow, the upload request that sends them, and what it left.

Shared by the upload, models and status tests.
"""

import io
import json
import os
import struct
import threading
import zlib

from PIL import Image, ImageDraw

from image2model.store import db
from tests.conftest import USER_KEY, bearer

UPLOAD_URL = "/api/v1/upload/"
TABLES = ("batches", "files", "jobs", "generations", "events")


def encode(image, image_format, **save_args):
    """Return the image saved in `image_format`."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **save_args)
    return buffer.getvalue()


def picture(size=(64, 48), mode="RGB"):
    """Return a small picture with a gradient and two shapes (a usable subject for a relief)."""
    width, height = size
    image = Image.linear_gradient("L").resize(size).convert(mode)
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 4, width // 2, height // 2), fill="yellow")
    draw.rectangle((width // 2, height // 2, width - 2, height - 2), fill="navy")
    return image


def noisy(size=(96, 96)):
    """Return a noisy RGB image: it compresses badly, so its data spans most of the file."""
    return Image.effect_noise(size, 60).convert("RGB")


def png(size=(64, 48), mode="RGB"):
    """Return PNG bytes of a picture."""
    return encode(picture(size, mode), "PNG")


def jpeg(size=(64, 48)):
    """Return JPEG bytes of a picture."""
    return encode(picture(size), "JPEG", quality=90)


def transparent_png(size=(32, 32)):
    """Return an RGBA PNG whose every pixel is fully transparent (nothing to build a relief of)."""
    return encode(Image.new("RGBA", size, (0, 0, 0, 0)), "PNG")


def mpo(size=(64, 48)):
    """Return a JPEG with an MPF second image, as many phone cameras write (Pillow says MPO)."""
    main, extra = picture(size), picture((16, 12))
    return encode(main, "MPO", save_all=True, append_images=[extra])


def truncated(data):
    """Return the first half of a file."""
    return data[: len(data) // 2]


def png_header(width, height):
    """Return a tiny PNG whose header claims `width` x `height` pixels (a decompression bomb)."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# name -> bytes of files that must be refused by content
BAD_FILES = {
    "text named png": ("notes.png", lambda: b"just some text, not an image\n" * 20),
    "gif": ("anim.gif", lambda: encode(picture(), "GIF")),
    "bmp": ("old.bmp", lambda: encode(picture(), "BMP")),
    "webp": ("modern.webp", lambda: encode(picture(), "WEBP")),
    "webp named jpg": ("sneaky.jpg", lambda: encode(picture(), "WEBP")),
    "truncated jpeg": ("cut.jpg", lambda: truncated(encode(noisy(), "JPEG", quality=95))),
    "truncated png": ("cut.png", lambda: truncated(encode(noisy(), "PNG"))),
    "empty": ("empty.png", lambda: b""),
    "png signature only": ("sig.png", lambda: b"\x89PNG\r\n\x1a\n"),
    "huge header": ("bomb.png", lambda: png_header(30_000, 30_000)),
}


def upload(client, files, key=USER_KEY, url=UPLOAD_URL, **form):
    """POST `files` (a list of `(filename, bytes)` or `(filename, bytes, content_type)`)."""
    parts = []
    for item in files:
        filename, data, *content_type = item
        parts.append((io.BytesIO(data), filename, *content_type))
    headers = bearer(key) if key else {}
    return client.post(
        url, data={**form, "files": parts}, headers=headers, content_type="multipart/form-data"
    )


def raw_upload(client, files, key=USER_KEY, boundary="b0undary"):
    """POST a multipart body built by hand, file names quoted as RFC 7230 quoted-strings.

    Werkzeug's test client writes a backslash in a file name unescaped, and its parser then reads
    it as an escape; built here, `C:\\x\\y.png` reaches the application intact.
    """
    body = b""
    for filename, data in files:
        quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files";'
                f' filename="{quoted}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return client.post(
        UPLOAD_URL,
        data=body,
        headers=bearer(key),
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def uploaded(client, files, key=USER_KEY, **form):
    """Upload `files`, insist on 201 and return the body."""
    response = upload(client, files, key=key, **form)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def spoil_upload(client, body, index):
    """Overwrite a stored upload with a transparent PNG, so its relief fails when it runs.

    Relief uploads are checked at upload time; a file that changes on disk afterwards is the
    honest way left to make a relief generation fail.
    """
    folder = os.path.join(client.application.instance_path, "uploads", body["batch_id"])
    file_id = body["uploaded_files"][index]["file_id"]
    (stored,) = [name for name in os.listdir(folder) if name.startswith(file_id)]
    with open(os.path.join(folder, stored), "wb") as handle:
        handle.write(transparent_png())


def uploaded_with_ghosts(client, files, key=USER_KEY, **form):
    """Upload `files`, then spoil every one named `ghost*` (see spoil_upload); return the body."""
    valid = [
        (name, png() if name.startswith("ghost") else data, *rest) for name, data, *rest in files
    ]
    body = uploaded(client, valid, key=key, **form)
    for index, (name, *_rest) in enumerate(files):
        if name.startswith("ghost"):
            spoil_upload(client, body, index)
    return body


def connect(app):
    """Return a new connection to the app's database (close it after use)."""
    return db.connect(db.database_path(app))


def query(app, sql, *args):
    """Return the rows of one query on the app's database."""
    conn = connect(app)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def row_counts(app):
    """Return the number of rows of each pipeline table."""
    return {table: query(app, f"SELECT COUNT(*) FROM {table}")[0][0] for table in TABLES}


def stored_files(app):
    """Return every file below the instance's uploads/ folder, relative to it."""
    top = os.path.join(app.instance_path, "uploads")
    return sorted(
        os.path.relpath(os.path.join(root, name), top)
        for root, _dirs, names in os.walk(top)
        for name in names
    )


def assert_nothing_stored(app):
    """Check that no upload file, batch, file, job, generation or event exists."""
    assert stored_files(app) == []
    assert row_counts(app) == dict.fromkeys(TABLES, 0)


def job_options(app, job_id):
    """Return the options stored with a job."""
    return json.loads(query(app, "SELECT options FROM jobs WHERE job_id = ?", job_id)[0][0])


def parse_sse(text):
    """Split an event stream into `(events, retry, comments)`; each event a dict of its fields."""
    events, retry, comments = [], None, []
    for block in text.split("\n\n"):
        fields = {}
        for line in filter(None, block.split("\n")):
            if line.startswith(":"):
                comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if "retry" in fields:
            retry = fields.pop("retry")
        if fields:
            assert set(fields) == {"id", "data"}, block
            events.append({"id": int(fields["id"]), "data": json.loads(fields["data"])})
    return events, retry, comments


class StreamReader(threading.Thread):
    """Reads an event stream on its own thread, so a test can act while the stream is open."""

    def __init__(self, client, url, headers):
        super().__init__(daemon=True)
        self.client, self.url, self.headers = client, url, headers
        self.chunks = []
        self.first_event = threading.Event()
        self.status = None

    def run(self):
        response = self.client.get(self.url, headers=self.headers, buffered=False)
        self.status = response.status_code
        try:
            for chunk in response.iter_encoded():
                self.chunks.append(chunk.decode())
                if "data:" in self.chunks[-1]:
                    self.first_event.set()
        finally:
            response.close()
            self.first_event.set()

    @property
    def text(self):
        """Return what was read so far."""
        return "".join(self.chunks)
