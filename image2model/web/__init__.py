"""The HTTP layer's own concerns: API keys (stored and checked), rate limits, event streams (SSE).

Owns: auth (who is calling, admin or not), keys (the `keys` CLI and the key table), limits
(flask-limiter and its headers), sse (a job's event stream). May import: store, pool, errors,
clock. Imported by blueprints (and the factory); never by the domain below.
"""
