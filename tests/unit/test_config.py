"""Config layering: defaults, instance/config.py, IMAGE2MODEL_* environment, test_config."""

import os
import pathlib
import subprocess
import sys

import pytest

from image2model import create_app


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """Point IMAGE2MODEL_INSTANCE_PATH at an empty folder and clear FAL_KEY."""
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("IMAGE2MODEL_INSTANCE_PATH", str(folder))
    monkeypatch.setenv("IMAGE2MODEL_API_KEYS", "k1")
    monkeypatch.delenv("FAL_KEY", raising=False)
    return folder


def test_defaults_apply(instance):
    app = create_app()
    assert app.instance_path == str(instance)
    assert app.config["MAX_FILES"] == 25
    assert app.config["MAX_FILE_SIZE"] == 10 * 1024 * 1024
    assert app.config["RATELIMIT_DEFAULT"] == "60 per minute;1000 per hour"
    assert app.config["FAL_POLL_INTERVAL"] == 1.0
    assert app.config["DEFAULT_MODEL"] == "relief"
    assert app.config["MAX_CONTENT_LENGTH"] == 25 * 10 * 1024 * 1024 + 1024 * 1024
    assert (instance / "image2model.sqlite3").exists()


def test_layers_override_in_order(instance, monkeypatch):
    (instance / "config.py").write_text("MAX_FILES = 5\nMAX_FILE_SIZE = 1000\nPOOL_SIZE = 3\n")
    monkeypatch.setenv("IMAGE2MODEL_MAX_FILE_SIZE", "2000")
    monkeypatch.setenv("IMAGE2MODEL_POOL_SIZE", "4")
    app = create_app({"POOL_SIZE": 2})
    assert app.config["MAX_CONTENT_LENGTH"] == 5 * 2000 + 1024 * 1024  # follows both
    assert app.config["MAX_FILES"] == 5  # instance file over default
    assert app.config["MAX_FILE_SIZE"] == 2000  # environment over instance file, parsed as JSON
    assert app.config["POOL_SIZE"] == 2  # test_config over environment


def test_api_keys_parse_from_comma_separated_env(instance, monkeypatch):
    monkeypatch.setenv("IMAGE2MODEL_API_KEYS", " alpha, beta ,,gamma")
    app = create_app()
    assert app.config["API_KEYS"] == ["alpha", "beta", "gamma"]


def test_numeric_key_stays_a_string(instance, monkeypatch):
    monkeypatch.setenv("IMAGE2MODEL_API_KEYS", "12345678")
    assert create_app().config["API_KEYS"] == ["12345678"]


def test_fal_key_makes_tripo3d_the_default(instance, monkeypatch):
    monkeypatch.setenv("FAL_KEY", "fal-secret")
    app = create_app()
    assert app.config["FAL_KEY"] == "fal-secret"
    assert app.config["DEFAULT_MODEL"] == "tripo3d"


def test_explicit_default_model_wins(instance, monkeypatch):
    monkeypatch.setenv("FAL_KEY", "fal-secret")
    monkeypatch.setenv("IMAGE2MODEL_DEFAULT_MODEL", "relief")
    assert create_app().config["DEFAULT_MODEL"] == "relief"


def test_unknown_default_model_is_refused(instance, monkeypatch):
    monkeypatch.setenv("IMAGE2MODEL_DEFAULT_MODEL", "magic")
    with pytest.raises(ValueError, match="DEFAULT_MODEL"):
        create_app()


def test_nothing_is_created_at_import(tmp_path):
    script = (
        "import os, pkgutil, importlib, threading, image2model, image2model.blueprints\n"
        "for pkg in (image2model, image2model.blueprints):\n"
        "    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert os.listdir('.') == [], os.listdir('.')\n"
        "print('clean')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[2])},
    )
    assert result.stdout.strip() == "clean", result.stderr
