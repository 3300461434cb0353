"""API keys: env and stored keys, Bearer parsing, 401/403 semantics, the keys CLI, the dev key."""

import io
import re

import pytest

from image2model import create_app
from image2model.store import db
from image2model.web import keys
from tests.conftest import ADMIN_KEY, OTHER_KEY, USER_KEY, bearer

USER_ENDPOINT = "/api/v1/models/available"
ADMIN_ENDPOINT = "/api/v1/admin/disk-usage"


@pytest.mark.parametrize("key", [USER_KEY, OTHER_KEY, ADMIN_KEY])
def test_configured_keys_are_accepted(client, key):
    assert client.get(USER_ENDPOINT, headers=bearer(key)).status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(client, scheme):
    response = client.get(USER_ENDPOINT, headers={"Authorization": f"{scheme} {USER_KEY}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {USER_KEY}",
        f"Token {USER_KEY}",
        USER_KEY,
        f"Bearer {USER_KEY} extra",
        "Bearer wrong-key",
        f"Bearer {USER_KEY[:-1]}",
    ],
)
def test_missing_malformed_or_unknown_key_is_401(client, header):
    headers = {} if header is None else {"Authorization": header}
    response = client.get(USER_ENDPOINT, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["detail"]["code"] == "AUTHENTICATION_REQUIRED"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("key", [USER_KEY, OTHER_KEY])
def test_user_key_on_admin_endpoint_is_403(client, key):
    response = client.get(ADMIN_ENDPOINT, headers=bearer(key))
    assert response.status_code == 403
    assert response.get_json()["detail"]["code"] == "INVALID_API_KEY"


def test_admin_endpoint_without_key_is_401(client):
    assert client.get(ADMIN_ENDPOINT).status_code == 401


def test_admin_key_reaches_admin_endpoint(client):
    assert client.get(ADMIN_ENDPOINT, headers=bearer(ADMIN_KEY)).status_code == 200


def test_health_needs_no_key(client):
    assert client.get("/api/v1/health/").status_code == 200


def test_each_env_key_is_its_own_owner(app):
    from image2model.web.auth import resolve_principal

    owners = set()
    for key in (USER_KEY, OTHER_KEY, ADMIN_KEY):
        with app.test_request_context(headers=bearer(key)):
            principal = resolve_principal()
            owners.add(principal.owner)
            assert key not in principal.owner and key not in principal.name
    assert len(owners) == 3


def _created_key(output):
    """Return the key printed by `keys create`."""
    match = re.search(r"^(i2m_\S+)$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def test_cli_create_list_revoke(app, runner, client):
    result = runner.invoke(args=["keys", "create", "--name", "alice"])
    assert result.exit_code == 0, result.output
    key = _created_key(result.output)
    assert client.get(USER_ENDPOINT, headers=bearer(key)).status_code == 200
    assert client.get(ADMIN_ENDPOINT, headers=bearer(key)).status_code == 403

    listing = runner.invoke(args=["keys", "list"])
    assert "alice" in listing.output and "active" in listing.output
    assert key not in listing.output

    conn = db.connect(db.database_path(app))
    stored = conn.execute("SELECT id, key_hash FROM api_keys WHERE name='alice'").fetchone()
    conn.close()
    assert stored["key_hash"] == keys.hash_key(key) and key not in stored["key_hash"]

    revoked = runner.invoke(args=["keys", "revoke", str(stored["id"])])
    assert revoked.exit_code == 0
    assert client.get(USER_ENDPOINT, headers=bearer(key)).status_code == 401
    again = runner.invoke(args=["keys", "revoke", str(stored["id"])])
    assert again.exit_code != 0 and "No active key" in again.output


def test_cli_admin_key_has_admin_scope(runner, client):
    key = _created_key(runner.invoke(args=["keys", "create", "--admin"]).output)
    assert client.get(ADMIN_ENDPOINT, headers=bearer(key)).status_code == 200


def test_stored_keys_are_distinct_owners(app, runner):
    from image2model.web.auth import resolve_principal

    first = _created_key(runner.invoke(args=["keys", "create"]).output)
    second = _created_key(runner.invoke(args=["keys", "create"]).output)
    owners = []
    for key in (first, second):
        with app.test_request_context(headers=bearer(key)):
            owners.append(resolve_principal().owner)
    assert owners[0] != owners[1]


def test_dev_key_is_created_and_printed_once_when_nothing_is_configured(tmp_path):
    config = {
        "INSTANCE_PATH": str(tmp_path / "inst"),
        "API_KEYS": "",
        "ADMIN_API_KEY": None,
        "POOL_SIZE": 0,
    }
    stream = io.StringIO()
    app = create_app({**config, "DEV_KEY_STREAM": stream})
    key = re.search(r"(i2m_\S+)", stream.getvalue()).group(1)
    client = app.test_client()
    assert client.get(ADMIN_ENDPOINT, headers=bearer(key)).status_code == 200

    second_stream = io.StringIO()
    create_app({**config, "DEV_KEY_STREAM": second_stream})
    assert second_stream.getvalue() == ""


def test_no_dev_key_when_a_key_is_configured(app_config):
    stream = io.StringIO()
    create_app({**app_config, "DEV_KEY_STREAM": stream})
    assert stream.getvalue() == ""
