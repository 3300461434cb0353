"""Parsing request input into checked values; every failure is a VALIDATION_ERROR."""

import json
import math

from flask import request

from image2model.errors import ApiError

JSON_BODY_LIMIT = 64 * 1024


def json_object(optional=False):
    """Return the request's JSON body as a dict (or {} when optional and empty), else raise."""
    # The app-wide limit is sized for uploads; a JSON body never needs more than this.
    request.max_content_length = JSON_BODY_LIMIT
    raw = request.get_data(cache=True)
    if not raw.strip():
        if optional:
            return {}
        raise ApiError("VALIDATION_ERROR", "A JSON object body is required", {})
    if not request.is_json:
        raise ApiError(
            "VALIDATION_ERROR",
            "Send the body as application/json",
            {"content_type": request.content_type},
        )
    try:
        # Python's json takes NaN, Infinity and 1e400, which no JSON client could read back.
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError("VALIDATION_ERROR", "The JSON body is nested too deeply") from None
    except ValueError as error:
        raise ApiError("VALIDATION_ERROR", f"Malformed JSON body: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(
            "VALIDATION_ERROR", "The JSON body must be an object", {"received": type(body).__name__}
        )
    return body


def _refuse_constant(name):
    """Refuse NaN and Infinity, which are not JSON."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text):
    """Return a JSON number as a float, refusing ones too large for a float."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} is out of range")
    return number


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


def known_query(allowed):
    """Refuse query parameters outside `allowed`: a misspelt one must not be silently ignored."""
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise ApiError(
            "VALIDATION_ERROR",
            f"Unknown query parameter: {', '.join(unknown)}",
            {"unknown": unknown, "allowed": list(allowed)},
        )
