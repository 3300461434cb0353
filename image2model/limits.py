"""Rate limits with flask-limiter, keyed by API key owner (client address when there is none)."""

from flask import current_app, g
from flask_limiter import Limit, Limiter
from flask_limiter.util import get_remote_address

from image2model.auth import resolve_principal


def rate_limit_key():
    """Return the bucket of the current request: its key's owner, else the client address."""
    principal = resolve_principal()
    if principal is not None:
        return principal.owner
    return "ip:" + (get_remote_address() or "unknown")


def configured_limits():
    """Return the limit string every rate-limited request counts against (RATELIMIT_DEFAULT)."""
    return current_app.config["RATELIMIT_DEFAULT"]


def settle_retry_after(response):
    """Keep Retry-After where the app set it, and the limiter's on its own 429s only
    (flask-limiter adds its window's reset to every response, over the app's own)."""
    own = g.get("own_retry_after")
    if own is not None:
        response.headers["Retry-After"] = own
    elif response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


def init_app(app):
    """Attach a limiter: one RATELIMIT_DEFAULT budget per key, shared by every route."""
    # flask-limiter keeps a bucket per route for its default limits, so a key could make
    # RATELIMIT_DEFAULT requests on each route; a shared scope makes it one budget per key.
    per_key = Limit(
        limit_provider=configured_limits,
        key_function=rate_limit_key,
        scope="api",
        shared=True,
        finalized=False,
    )
    # Registered first so that it runs after the limiter's own header hook.
    app.after_request(settle_retry_after)
    limiter = Limiter(key_func=rate_limit_key, headers_enabled=True, default_limits=[per_key])
    limiter.init_app(app)
    app.extensions["image2model.limiter"] = limiter


def exempt_blueprint(app, blueprint):
    """Exclude a whole blueprint (health probes) from rate limiting."""
    app.extensions["image2model.limiter"].exempt(blueprint)
