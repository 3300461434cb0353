"""Secrets out of log records: configured keys and credential-shaped text become a marker, in
the record and in the JSON line it is written as."""

import json
import logging
import re

from image2model import clock

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4

# Secrets found by their shape: credentials in headers, `name=value` pairs and stored API keys.
# Each pattern runs only on text that holds one of its words (in the text lowered where the
# pattern ignores case): most lines hold none, and a pattern costs far more than a word search.
SECRET_PATTERNS = (
    (
        re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+"),
        rf"\1\2{REDACTED}",
        ("bearer", "basic"),
    ),
    (re.compile(r"\b(Key)(\s+)[A-Za-z0-9._~+/=:-]{8,}"), rf"\1\2{REDACTED}", ("Key",)),
    (
        re.compile(
            r"(?i)\b(api[_-]?key|fal[_-]?key|access[_-]?token|token|secret|password|passwd)"
            r"""(["']?\s*[:=]\s*["']?)[^\s"',;&]+"""
        ),
        rf"\1\2{REDACTED}",
        (
            "apikey",
            "api_key",
            "api-key",
            "falkey",
            "fal_key",
            "fal-key",
            "token",
            "secret",
            "passw",
        ),
    ),
    (re.compile(r"\bi2m_[A-Za-z0-9_-]{16,}"), REDACTED, ("i2m_",)),
)
# Whether each pattern ignores case, read once: RegexFlag arithmetic is slow.
_IGNORES_CASE = tuple(bool(pattern.flags & re.IGNORECASE) for pattern, *_rest in SECRET_PATTERNS)


class Redactor:
    """Replaces configured secrets and credential-shaped text with a marker."""

    def __init__(self, secrets):
        self.secrets = frozenset(s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH)
        ordered = sorted(self.secrets, key=len, reverse=True)
        self._literal = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text):
        """Return `text` with every secret replaced."""
        if self._literal is not None:
            text = self._literal.sub(REDACTED, text)
        lowered = text.lower()
        # Outside ASCII, ignoring case matches more than lower() does (ı for i): no shortcut.
        ascii_only = text.isascii()
        for (pattern, replacement, words), ignores_case in zip(
            SECRET_PATTERNS, _IGNORES_CASE, strict=True
        ):
            if ascii_only or not ignores_case:
                haystack = lowered if ignores_case else text
                for word in words:
                    if word in haystack:
                        break
                else:
                    continue
            text = pattern.sub(replacement, text)
            lowered, ascii_only = text.lower(), text.isascii()
        return text


def configured_secrets(config):
    """Return the secret strings of a configuration: API keys, admin key, FAL key and its parts."""
    secrets = [*config.get("API_KEYS", []), config.get("ADMIN_API_KEY"), config.get("SECRET_KEY")]
    fal_key = config.get("FAL_KEY")
    if fal_key:
        secrets += [fal_key, *str(fal_key).split(":")]
    return [str(secret) for secret in secrets if secret]


class RedactingFilter(logging.Filter):
    """Rewrites a record's message, traceback and stack with secrets redacted (every handler)."""

    def __init__(self, redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break the caller
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = self.redactor.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


_JSON = json.JSONEncoder(default=str, ensure_ascii=False)  # json.dumps makes one per call


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, fields, exception."""

    def __init__(self, redactor):
        super().__init__()
        self.redactor = redactor
        self._second = (None, "")  # the last second written, and its text without the Z

    def timestamp(self, created):
        """Return `clock.iso(created, "milliseconds")`, making a second's text once."""
        second = int(created)
        micro = round((created - second) * 1_000_000)  # as datetime rounds: half to even
        if micro == 1_000_000:
            second, micro = second + 1, 0
        last, text = self._second
        if last != second:
            text = clock.iso(second).removesuffix("Z")
            self._second = (second, text)
        return f"{text}.{micro // 1000:03d}Z"

    def format(self, record):
        entry = {
            "timestamp": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        entry.update(getattr(record, "log_fields", None) or {})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # Redacted again as a whole: fields and reprs may carry a secret too.
        return self.redactor.redact(_JSON.encode(entry))
