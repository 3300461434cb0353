"""The API's one error shape: ApiError and the handlers that render every error as the envelope."""

import json
import logging

from flask import g, jsonify
from gunicorn import util as gunicorn_util
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)

# Codes for HTTP errors raised outside our own code (routing, Werkzeug, extensions).
CODES_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "AUTHENTICATION_REQUIRED",
    403: "INVALID_API_KEY",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    410: "GONE",
    413: "FILE_TOO_LARGE",
    415: "VALIDATION_ERROR",
    416: "RANGE_NOT_SATISFIABLE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMIT_EXCEEDED",
    500: "PROCESSING_ERROR",
    502: "FAL_API_ERROR",
    503: "SERVICE_UNAVAILABLE",
}

MESSAGES_BY_STATUS = {
    400: "The request is malformed",
    404: "No such resource",
    405: "Method not allowed on this resource",
    413: "The request body exceeds the size limit",
    429: "Too many requests: rate limit exceeded",
}

# Headers of an HTTP error worth keeping on the JSON response.
KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "Content-Range")


class ApiError(Exception):
    """An error the API reports to its client in the contract's envelope."""

    def __init__(self, code, message, details=None, status=400, headers=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.status = status
        self.headers = headers or {}


def error_response(code, message, details=None, status=400, headers=None):
    """Build the envelope response `{"detail": {"code", "message", "details"}}`."""
    response = jsonify({"detail": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_api_error(error):
    """Render an ApiError."""
    if "Retry-After" in error.headers:
        # flask-limiter raises every Retry-After to its window's reset; this one is ours.
        g.own_retry_after = error.headers["Retry-After"]
    return error_response(error.code, error.message, error.details, error.status, error.headers)


def handle_http_exception(error):
    """Render a Werkzeug/extension HTTP error (404, 405, 413, 429, ...) in the envelope."""
    status = error.code or 500
    code = CODES_BY_STATUS.get(status, "PROCESSING_ERROR" if status >= 500 else "VALIDATION_ERROR")
    message = MESSAGES_BY_STATUS.get(status) or error.description or error.name
    details = {}
    if status == 429:
        details["limit"] = str(error.description)
    headers = {name: value for name, value in error.get_headers() if name in KEPT_HEADERS}
    return error_response(code, message, details, status, headers)


def handle_broken_body(error):
    """Answer a request body that gunicorn could not read to its end (cut off, bad chunks)."""
    logger.warning("Unreadable request body: %s", type(error).__name__)
    return error_response(
        "VALIDATION_ERROR",
        "The request body is incomplete or malformed",
        {"reason": type(error).__name__},
        400,
    )


def handle_unexpected(error):
    """Log an unexpected exception with its traceback and answer 500 without any detail of it."""
    logger.exception("Unhandled exception while serving a request")
    return error_response("PROCESSING_ERROR", "Internal processing error", {}, 500)


def write_server_error(sock, status, reason, message):
    """Write one of gunicorn's own refusals (a request it cannot parse) in the envelope.

    It replaces gunicorn.util.write_error, which writes an HTML page: gunicorn answers these
    before the app sees the request, and has no other hook for them.
    """
    # All but gunicorn's 500 (its own configuration) are the client's fault, 501 included.
    code = {413: "FILE_TOO_LARGE", 500: "PROCESSING_ERROR"}.get(status, "VALIDATION_ERROR")
    text = f"{reason}: {message}" if message else reason
    body = json.dumps({"detail": {"code": code, "message": text, "details": {}}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, (head + body).encode("latin-1"))


def init_app(app):
    """Register the handlers so that every error of the API leaves in the envelope."""
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    # gunicorn raises these from the body stream it hands the app (chunked bodies)
    app.register_error_handler(NoMoreData, handle_broken_body)
    app.register_error_handler(ParseException, handle_broken_body)
    app.register_error_handler(Exception, handle_unexpected)
