"""The browser assets under image2model/static/vendor/ match the table of vendor_assets.py."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "vendor_assets.py"


def load_script():
    """Import scripts/vendor_assets.py from its path (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("vendor_assets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vendor_assets = load_script()


def test_check_finds_no_problem():
    assert vendor_assets.check() == []


def test_check_command_exits_zero():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("short", sorted(vendor_assets.PACKAGES))
def test_files_are_not_empty_and_licensed(short):
    folder = vendor_assets.VENDOR_DIR / short
    for path in vendor_assets.PACKAGES[short]["files"]:
        assert (folder / Path(path).name).stat().st_size > 0, path
    assert (folder / "LICENSE").stat().st_size > 0
    assert vendor_assets.PACKAGES[short]["name"] in (folder / "VERSION").read_text()


def test_check_reports_a_changed_missing_or_extra_file(tmp_path):
    shutil.copytree(vendor_assets.VENDOR_DIR, tmp_path, dirs_exist_ok=True)
    with open(tmp_path / "swagger-ui" / "swagger-ui.css", "a") as css:
        css.write("body{}")
    (tmp_path / "model-viewer" / "LICENSE").unlink()
    (tmp_path / "model-viewer" / "stray.js").write_text("")
    problems = "\n".join(vendor_assets.check(tmp_path))
    assert "swagger-ui.css: sha256" in problems
    assert "LICENSE: missing" in problems
    assert "stray.js: not in the table" in problems
