"""What a route receives (Call) and returns (Reply), and the JSON reply helpers."""

import dataclasses
import json
from email.message import Message


@dataclasses.dataclass
class Call:
    """One parsed HTTP request."""

    method: str
    path: str  # raw, still percent-encoded, without the query
    query: dict[str, str]
    headers: Message
    body: bytes
    params: dict[str, str] = dataclasses.field(default_factory=dict)  # from the route pattern

    def json(self) -> tuple[object, str | None]:
        """Return the decoded JSON body and None, or None and the decoding error."""
        try:
            return json.loads(self.body or b"null"), None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, str(exc)


@dataclasses.dataclass
class Reply:
    """One HTTP response to write."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def json_reply(status: int, payload: object, headers: dict[str, str] | None = None) -> Reply:
    """Return a JSON reply."""
    return Reply(status, json.dumps(payload).encode(), "application/json", dict(headers or {}))


def detail_reply(code: int, detail: object, headers: dict[str, str] | None = None, **extra):
    """Return fal's error shape: {"detail": ...} plus any extra body fields."""
    return json_reply(code, {"detail": detail, **extra}, headers)
