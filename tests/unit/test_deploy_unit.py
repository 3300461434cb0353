"""deploy/image2model.service: systemd accepts it, and it keeps the settings the service needs."""

import re
import runpy
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "image2model.service"
SYSTEM_UNITS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))


def read_unit(path):
    """Return {section: {key: [values]}}: unlike configparser, a key may repeat (Environment=)."""
    sections = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit():
    return read_unit(UNIT)


@pytest.fixture(scope="module")
def service(unit):
    return {key: values[-1] for key, values in unit["Service"].items()}


@pytest.fixture(scope="module")
def environment(unit):
    assignments = [word for value in unit["Service"]["Environment"] for word in shlex.split(value)]
    return dict(assignment.split("=", 1) for assignment in assignments)


def seconds(value):
    """Return a systemd time span written in plain seconds ("40" or "40s")."""
    match = re.fullmatch(r"(\d+)\s*(s|sec)?", value)
    assert match, f"write {value!r} in seconds"
    return int(match[1])


def test_systemd_analyze_verify_passes(tmp_path):
    """Verify the file as it is, in a root holding systemd's own units and a stand-in program at
    ExecStart's path: verify requires that program, which exists only once the service is installed.
    Any warning (an unknown key, a bad value) fails the test too."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd): unit not verified")
    system_units = next((path for path in SYSTEM_UNITS if path.is_dir()), None)
    if system_units is None:
        pytest.skip("systemd's own units are not installed: the unit's targets cannot be resolved")
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    program = read_unit(UNIT)["Service"]["ExecStart"][-1].split()[0]
    stand_in = root / program.lstrip("/")
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    installed = root / "etc/systemd/system" / UNIT.name
    installed.parent.mkdir(parents=True)
    shutil.copyfile(UNIT, installed)

    result = subprocess.run(
        [analyze, f"--root={root}", "verify", str(installed)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_runs_gunicorn_as_make_run_does(service):
    folder = service["WorkingDirectory"]
    program, *arguments = service["ExecStart"].split()
    makefile = (ROOT / "Makefile").read_text()
    assert program == f"{folder}/.venv/bin/gunicorn"
    assert f"$(BIN)/gunicorn {' '.join(arguments)}" in makefile
    assert service["User"] == "image2model"
    assert service["Type"] == "notify"


def test_listens_where_nginx_proxies(environment):
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert f"server {environment['HOST']}:{environment['PORT']};" in nginx


def test_restarts_and_stops_gracefully(service, monkeypatch):
    monkeypatch.delenv("GUNICORN_GRACEFUL_TIMEOUT", raising=False)
    graceful_timeout = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["graceful_timeout"]
    assert service["Restart"] == "always"
    assert 0 < seconds(service["RestartSec"]) <= 5
    assert service["KillMode"] == "mixed"
    assert service["KillSignal"] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"]) > graceful_timeout


def test_instance_folder_is_the_writable_state_directory(service, environment):
    instance_path = environment["IMAGE2MODEL_INSTANCE_PATH"]
    assert instance_path == f"/var/lib/{service['StateDirectory']}"
    writable = [f"/var/lib/{service['StateDirectory']}", *service.get("ReadWritePaths", "").split()]
    assert instance_path in writable
    assert service["EnvironmentFile"] == "-/etc/image2model/image2model.env"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ],
)
def test_is_hardened(service, key, value):
    assert service[key] == value


def test_starts_with_the_network_at_boot(unit):
    assert "network-online.target" in unit["Unit"]["After"][-1].split()
    assert "network-online.target" in unit["Unit"]["Wants"][-1].split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
