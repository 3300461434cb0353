"""The generators: each declares itself (`GENERATOR`, a `base.Generator`) in its own module, and
this registry is the one list of them. Adding a generator touches only this folder.

May import: the store, storage, models3d and pipeline's GenerationRun interface (through the run
object it is handed); nothing of the web layer but errors and params.
"""

from image2model.errors import ApiError
from image2model.generators import relief_step, tripo3d
from image2model.params import choice

# In order of preference: the default is the first one this server can run.
REGISTRY = {generator.name: generator for generator in (tripo3d.GENERATOR, relief_step.GENERATOR)}


def names(remote=None):
    """Return the generators' names, all or only the remote (or local) ones."""
    return [name for name, g in REGISTRY.items() if remote is None or g.remote == remote]


def chosen(app, requested):
    """Return the generator a request asks for (or the default), refusing unknown or unavailable
    ones: never a silent switch to another."""
    name = requested if requested not in (None, "") else app.config["DEFAULT_MODEL"]
    choice(name, "model_type", tuple(REGISTRY))
    reason = REGISTRY[name].unavailable_reason(app.config)
    if reason:
        raise ApiError(
            "VALIDATION_ERROR",
            f"model_type {name!r} is not available: {reason}",
            {"model_type": name, "reason": reason},
        )
    return REGISTRY[name]


def catalogue(app):
    """Return the generator list served by /models/available."""
    return [
        {
            "name": generator.title,
            "description": generator.description,
            "type": generator.name,
            "supported_formats": list(generator.formats),
            "available": generator.unavailable_reason(app.config) is None,
            "unavailable_reason": generator.unavailable_reason(app.config),
            "default": app.config["DEFAULT_MODEL"] == generator.name,
        }
        for generator in REGISTRY.values()
    ]


def init_app(app):
    """Set each generator up, and settle DEFAULT_MODEL: the first generator this server can run
    unless one is configured."""
    for generator in REGISTRY.values():
        if generator.init_app is not None:
            generator.init_app(app)
    if not app.config.get("DEFAULT_MODEL"):
        runnable = [g.name for g in REGISTRY.values() if g.unavailable_reason(app.config) is None]
        app.config["DEFAULT_MODEL"] = next(iter(runnable), next(iter(REGISTRY)))
    if app.config["DEFAULT_MODEL"] not in REGISTRY:
        raise ValueError(f"DEFAULT_MODEL must be one of {', '.join(REGISTRY)}")
