"""Secrets out of log records: configured keys and credential-shaped text become a marker."""

import logging
import re

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4

# Secrets found by their shape: credentials in headers, `name=value` pairs and stored API keys.
SECRET_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+"), rf"\1\2{REDACTED}"),
    (re.compile(r"\b(Key)(\s+)[A-Za-z0-9._~+/=:-]{8,}"), rf"\1\2{REDACTED}"),
    (
        re.compile(
            r"(?i)\b(api[_-]?key|fal[_-]?key|access[_-]?token|token|secret|password|passwd)"
            r"""(["']?\s*[:=]\s*["']?)[^\s"',;&]+"""
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"\bi2m_[A-Za-z0-9_-]{16,}"), REDACTED),
)


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
        for pattern, replacement in SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
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
