"""Rate limits with flask-limiter, keyed by API key owner (client address when there is none)."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from image2model.auth import resolve_principal


def rate_limit_key():
    """Return the bucket of the current request: its key's owner, else the client address."""
    principal = resolve_principal()
    if principal is not None:
        return principal.owner
    return "ip:" + (get_remote_address() or "unknown")


def init_app(app):
    """Attach a limiter whose defaults come from RATELIMIT_DEFAULT."""
    limiter = Limiter(key_func=rate_limit_key, headers_enabled=True)
    limiter.init_app(app)
    app.extensions["image2model.limiter"] = limiter


def exempt_blueprint(app, blueprint):
    """Exclude a whole blueprint (health probes) from rate limiting."""
    app.extensions["image2model.limiter"].exempt(blueprint)
