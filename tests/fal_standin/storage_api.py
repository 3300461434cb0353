"""fal's storage: CDN tokens, uploads to the CDN or through a signed URL, and file downloads."""

import secrets
import threading
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote, urlsplit

from .wire import Call, Reply, detail_reply, json_reply

TOKEN_LIFETIME = timedelta(hours=1)


class Storage:
    """In-memory CDN: issued tokens, served files by URL path, and pending signed uploads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tokens: set[str] = set()
        self._files: dict[str, tuple[bytes, str]] = {}
        # upload path: (signature, file path, content type)
        self._signed: dict[str, tuple[str, str, str]] = {}

    def issue_token(self) -> str:
        """Return a new CDN upload token."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return token

    def token_valid(self, token: str) -> bool:
        """Tell whether a token was issued here."""
        with self._lock:
            return token in self._tokens

    def publish(self, files: dict[str, tuple[bytes, str]]) -> None:
        """Serve files by URL path."""
        with self._lock:
            self._files.update(files)

    def file(self, path: str) -> tuple[bytes, str] | None:
        """Return (bytes, content type) served at a URL path, or None."""
        with self._lock:
            return self._files.get(path)

    def fetch(self, url: str, base_url: str) -> bytes | None:
        """Return the bytes behind one of this server's file URLs, or None for any other URL."""
        if not url.startswith(base_url + "/files/"):
            return None
        found = self.file(urlsplit(url).path)
        return found[0] if found else None

    def expect_upload(self, upload_path: str, signature: str, file_path: str, content_type: str):
        """Remember a signed upload URL until its PUT arrives."""
        with self._lock:
            self._signed[upload_path] = (signature, file_path, content_type)

    def signed_upload(self, upload_path: str) -> tuple[str, str, str] | None:
        """Return (signature, file path, content type) for a signed upload URL, or None."""
        with self._lock:
            return self._signed.get(upload_path)


def token(standin, call: Call) -> Reply:
    """POST /storage/auth/token?storage_type=fal-cdn-v3: issue a CDN upload token."""
    if call.query.get("storage_type") != "fal-cdn-v3":
        return detail_reply(400, f"Unsupported storage type: {call.query.get('storage_type')}")
    expires_at = datetime.now(UTC).replace(microsecond=0) + TOKEN_LIFETIME
    return json_reply(
        200,
        {
            "token": standin.storage.issue_token(),
            "token_type": "Bearer",
            "base_url": standin.base_url,
            "expires_at": expires_at.isoformat(),
        },
    )


def upload(standin, call: Call) -> Reply:
    """POST /files/upload: store the raw body on the CDN and answer its access URL."""
    scheme, _, credential = (call.headers.get("Authorization") or "").partition(" ")
    if scheme != "Bearer" or not standin.storage.token_valid(credential):
        return detail_reply(401, "Invalid or expired CDN token")
    file_name = _safe_name(call.headers.get("X-Fal-File-Name"))
    content_type = call.headers.get("Content-Type") or "application/octet-stream"
    path = f"/files/input/{uuid.uuid4().hex}/{quote(file_name)}"
    _store(standin, "cdn", path, file_name, content_type, call.body)
    return json_reply(200, {"access_url": standin.base_url + path})


def initiate(standin, call: Call) -> Reply:
    """POST /storage/upload/initiate?storage_type=gcs: hand out a signed PUT URL."""
    if call.query.get("storage_type") != "gcs":
        return detail_reply(400, f"Unsupported storage type: {call.query.get('storage_type')}")
    arguments, _ = call.json()
    if not isinstance(arguments, dict) or not isinstance(arguments.get("file_name"), str):
        return detail_reply(422, [{"loc": ["body", "file_name"], "msg": "Field required"}])
    file_name = _safe_name(arguments["file_name"])
    content_type = arguments.get("content_type") or "application/octet-stream"
    key = f"{uuid.uuid4().hex}/{quote(file_name)}"
    signature = secrets.token_hex(16)
    upload_path, file_path = f"/storage/gcs/{key}", f"/files/gcs/{key}"
    standin.storage.expect_upload(upload_path, signature, file_path, content_type)
    return json_reply(
        200,
        {
            "upload_url": f"{standin.base_url}{upload_path}?X-Goog-Signature={signature}",
            "file_url": standin.base_url + file_path,
        },
    )


def put_signed(standin, call: Call) -> Reply:
    """PUT a signed upload URL: store the body where the initiate call said it would be."""
    expected = standin.storage.signed_upload(call.path)
    if expected is None or call.query.get("X-Goog-Signature") != expected[0]:
        body = b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
        return Reply(403, body, "application/xml; charset=UTF-8")
    _, file_path, content_type = expected
    file_name = unquote(file_path.rsplit("/", 1)[-1])
    content_type = call.headers.get("Content-Type") or content_type
    _store(standin, "gcs", file_path, file_name, content_type, call.body)
    return Reply(200, content_type="text/plain")


def download(standin, call: Call) -> Reply:
    """GET a file URL: the file's bytes with its content type; public, as fal's CDN is."""
    found = standin.storage.file(call.path)
    if found is None:
        return detail_reply(404, "File not found")
    data, content_type = found
    standin.record("downloads", {"path": call.path, "size": len(data)})
    return Reply(200, data, content_type)


def _store(standin, via: str, path: str, file_name: str, content_type: str, data: bytes) -> None:
    """Serve an uploaded file at a path and record the upload."""
    standin.storage.publish({path: (data, content_type)})
    standin.record(
        "uploads",
        {
            "via": via,
            "file_name": file_name,
            "content_type": content_type,
            "size": len(data),
            "url": standin.base_url + path,
        },
    )


def _safe_name(file_name: str | None) -> str:
    """Return the last path component of a client-given file name."""
    name = (file_name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return name or "upload.bin"
