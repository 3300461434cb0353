"""Parsing request input into checked values; every failure is a VALIDATION_ERROR."""

from flask import request

from image2model.errors import ApiError

JSON_BODY_LIMIT = 64 * 1024


def json_object(optional=False):
    """Return the request's JSON body as a dict (or {} when optional and empty), else raise."""
    # The app-wide limit is sized for uploads; a JSON body never needs more than this.
    request.max_content_length = JSON_BODY_LIMIT
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise ApiError("VALIDATION_ERROR", "The JSON body is nested too deeply") from None
    if body is None:
        raw = request.get_data(cache=True)
        if optional and not raw.strip():
            return {}
        message = "Malformed JSON body" if raw.strip() else "A JSON object body is required"
        raise ApiError("VALIDATION_ERROR", message, {"content_type": request.content_type})
    if not isinstance(body, dict):
        raise ApiError(
            "VALIDATION_ERROR", "The JSON body must be an object", {"received": type(body).__name__}
        )
    return body


def bounded_int(value, field, minimum, maximum, default=None):
    """Return `value` as an int within [minimum, maximum], or raise naming the field."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ApiError("VALIDATION_ERROR", f"{field} must be an integer", {field: value})
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ApiError("VALIDATION_ERROR", f"{field} must be an integer", {field: value}) from None
    if not minimum <= number <= maximum:
        raise ApiError(
            "VALIDATION_ERROR",
            f"{field} must be between {minimum} and {maximum}",
            {field: number, "minimum": minimum, "maximum": maximum},
        )
    return number


def choice(value, field, allowed, default=None):
    """Return `value` if it is one of `allowed` (or the default when absent), else raise."""
    if value is None or value == "":
        return default
    if value not in allowed:
        raise ApiError(
            "VALIDATION_ERROR",
            f"{field} must be one of: {', '.join(allowed)}",
            {field: value, "allowed": list(allowed)},
        )
    return value
