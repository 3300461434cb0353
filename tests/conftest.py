"""Fixtures: an app on a temporary data folder, its client and CLI runner, and API keys."""

import pytest

from image2model import create_app
from image2model.pipeline import lifecycle

USER_KEY = "user-key-0123456789"
OTHER_KEY = "other-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"


def bearer(key):
    """Return the Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}


def with_config(**settings):
    """Build the app of a test with these extra settings (indirect parametrization)."""
    return pytest.mark.parametrize("app_config", [settings], indirect=True, ids=["config"])


@pytest.fixture
def app_config(tmp_path, monkeypatch, request):
    """Return the test configuration; tests may change it before `app` is built.

    FAL_KEY is cleared from the environment so the machine's own never decides a test.
    """
    monkeypatch.delenv("FAL_KEY", raising=False)
    return {
        "TESTING": True,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "API_KEYS": f"{USER_KEY},{OTHER_KEY}",
        "ADMIN_API_KEY": ADMIN_KEY,
        "POOL_SIZE": 0,
        "RATELIMIT_DEFAULT": "1000 per minute",
        **getattr(request, "param", {}),
    }


@pytest.fixture
def app(app_config):
    """Build an app on its own data folder."""
    application = create_app(app_config)
    lifecycle.start(application)  # as the server does: tests of the pipeline need the dispatcher
    yield application
    lifecycle.shutdown(application)


@pytest.fixture
def client(app):
    """Return a test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """Return a CLI runner."""
    return app.test_cli_runner()
