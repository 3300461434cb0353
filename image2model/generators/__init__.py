"""The generators a job can use, and what this server says about each."""

from image2model.convert import FORMATS

CATALOGUE = {
    "tripo3d": {
        "name": "Tripo3D",
        "description": "FAL.AI Tripo3D v2.5: AI reconstruction of a textured 3D model"
        " from one image",
        "needs": "FAL_KEY",
    },
    "relief": {
        "name": "Relief",
        "description": "Offline bas-relief: a textured height field made from the image itself,"
        " not a reconstruction of hidden sides",
        "needs": None,
    },
}


def unavailable_reason(app, model_type):
    """Return why a generator cannot run on this server, or None when it can."""
    if model_type == "tripo3d" and not app.config["FAL_KEY"]:
        return "FAL_KEY is not configured on this server"
    return None


def catalogue(app):
    """Return the generator list served by /models/available."""
    return [
        {
            "name": entry["name"],
            "description": entry["description"],
            "type": model_type,
            "supported_formats": list(FORMATS),
            "available": unavailable_reason(app, model_type) is None,
            "unavailable_reason": unavailable_reason(app, model_type),
            "default": app.config["DEFAULT_MODEL"] == model_type,
        }
        for model_type, entry in CATALOGUE.items()
    ]
