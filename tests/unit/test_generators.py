"""Generators declare themselves: a new one in the registry alone is offered, checked and run."""

import dataclasses

from image2model import generators
from image2model.generators import relief_step
from image2model.pipeline import lifecycle
from tests import images
from tests.conftest import USER_KEY, bearer


def test_a_generator_added_to_the_registry_alone_is_offered_and_run(app, client, monkeypatch):
    echo = dataclasses.replace(
        relief_step.GENERATOR, name="echo", title="Echo", estimated_seconds=7
    )
    monkeypatch.setitem(generators.REGISTRY, "echo", echo)

    offered = client.get("/api/v1/models/available", headers=bearer(USER_KEY)).get_json()
    entry = next(item for item in offered if item["type"] == "echo")
    assert entry["name"] == "Echo" and entry["available"] is True
    body = images.uploaded(client, [("a.png", images.png())], model_type="echo")
    lifecycle.get_dispatcher(app).run_due()
    job = client.get(f"/api/v1/models/job/{body['job_id']}", headers=bearer(USER_KEY)).get_json()
    assert (job["model_type"], job["status"]) == ("echo", "completed")
    started = client.post(
        "/api/v1/models/generate",
        json={"file_id": body["uploaded_files"][0]["file_id"], "model_type": "echo"},
        headers=bearer(USER_KEY),
    ).get_json()
    assert started["estimated_time"] == 7


def test_the_default_is_the_first_generator_this_server_can_run(app):
    assert app.config["FAL_KEY"] is None and app.config["DEFAULT_MODEL"] == "relief"
    assert generators.names(remote=True) == ["tripo3d"]
    assert generators.names(remote=False) == ["relief"]
