"""Rate limits with flask-limiter, keyed by API key owner (client address when there is none)."""

import time

from flask import current_app, g, request
from flask_limiter import Limit, Limiter, RateLimitExceeded, RequestLimit
from flask_limiter.util import get_remote_address
from limits.storage import MemoryStorage

from image2model.web.auth import resolve_principal


class SweptMemoryStorage(MemoryStorage):
    """limits' in-process storage, removing expired counters inline at most once a second.

    Its own sweep runs on a Timer thread that each counted request restarts 10 ms after the
    last one ran: on a busy server, a new thread for most requests. A counter past its window
    reads as zero either way; the sweep only frees memory.
    """

    STORAGE_SCHEME = ["image2model-memory"]
    SWEEP_EVERY = 1.0

    def __init__(self, uri=None, wrap_exceptions=False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.timer.cancel()
        self.swept_at = time.monotonic()

    # limits calls this private hook from incr and decr; tests check that it still does.
    def _MemoryStorage__schedule_expiry(self):
        now = time.monotonic()
        if now - self.swept_at >= self.SWEEP_EVERY:
            self.swept_at = now
            self._MemoryStorage__expire_events()


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


class ApiLimiter(Limiter):
    """flask-limiter, evaluating this app's one kind of limit directly.

    Its general evaluation resolves, for every request, the route's, blueprint's, application's
    and meta limits and their exemptions before it counts anything: most of a limited request's
    cost, and an exempt one's too. This app declares only its default limits, shared by every
    route, and exempts whole blueprints; so those let a request through at once, and the others
    count against the defaults as flask-limiter would, leaving it the same context for its
    headers, its 429 and anything evaluated later.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exempt_blueprints = set()
        self._sorted_defaults = {}  # limit string -> its limits, in flask-limiter's order

    def _check_request_limit(self, callable_name=None, in_middleware=True):
        if request.blueprint in self.exempt_blueprints:
            return
        endpoint = request.endpoint
        if not in_middleware or self._in_memory_fallback_enabled:
            super()._check_request_limit(callable_name, in_middleware)
        elif endpoint and endpoint.rpartition(".")[2] != "static":  # as flask-limiter skips
            self._count(endpoint)

    def _count(self, endpoint):
        """Count the request against each default limit, up to the first breached (flask-limiter's
        default, RATELIMIT_FAIL_ON_FIRST_BREACH)."""
        provided = configured_limits()
        limits = self._sorted_defaults.get(provided)
        if limits is None:
            limits = sorted(self.limit_manager.default_limits, key=lambda lim: lim.limit)
            self._sorted_defaults[provided] = limits
        context = self.context
        context.seen_limits.update(limits)  # a later evaluation (a decorated route) skips them
        for lim in limits:
            args = [lim.key_func(), lim.scope_for(endpoint, request.method)]
            if self._key_prefix:
                args = [self._key_prefix, *args]
            allowed = self.limiter.hit(lim.limit, *args, cost=lim.deduction_amount)
            counted = RequestLimit(self, lim.limit, args, not allowed, lim.shared)
            context.view_rate_limits.append(counted)
            if context.view_rate_limit is None or not allowed:
                context.view_rate_limit = counted  # the first, or the breached one, in headers
            if not allowed:
                self.logger.info(
                    "ratelimit %s (%s) exceeded at endpoint: %s", lim.limit, *args[-2:]
                )
                raise RateLimitExceeded(lim)


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
    if app.config["RATELIMIT_STORAGE_URI"] == "memory://":
        app.config["RATELIMIT_STORAGE_URI"] = "image2model-memory://"
    limiter = ApiLimiter(key_func=rate_limit_key, headers_enabled=True, default_limits=[per_key])
    limiter.init_app(app)
    # Its header hook and its teardown, which resets a context kept on the request anyway, as
    # one hook that an exempt request leaves at once (every hook costs each request a call).
    add_headers = app.after_request_funcs[None].pop()
    reset = app.teardown_request_funcs[None].pop()
    if getattr(add_headers, "args", None) != (limiter,) or reset.__self__ is not limiter:
        raise RuntimeError("flask-limiter did not register the hooks this module replaces")

    def finish(response):
        if request.blueprint in limiter.exempt_blueprints:
            return response
        return settle_retry_after(add_headers(response))

    app.after_request(finish)
    app.extensions["image2model.limiter"] = limiter


def exempt_blueprint(app, blueprint):
    """Exclude a whole blueprint (health probes) from rate limiting."""
    limiter = app.extensions["image2model.limiter"]
    limiter.exempt(blueprint)
    limiter.exempt_blueprints.add(blueprint.name)
