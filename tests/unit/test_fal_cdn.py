"""The CDN side of fal uploads: tokens asked through one kept client, and one CDN client per token,
the one before closed only when safe."""

import ssl
from types import SimpleNamespace

import fal_client.client
import httpx

from image2model.generators.fal_connection import CdnClients, TokenManager

TLS = ssl.create_default_context()


def token(value):
    """Return a CDN token as fal-client's token manager hands it out."""
    return SimpleNamespace(token=value, token_type="Bearer")


def test_uploads_under_one_token_share_one_client_that_sends_it():
    clients = CdnClients(timeout=5, tls=TLS)
    first = clients.for_token(token("t1"))
    assert clients.for_token(token("t1")) is first
    assert first.headers["Authorization"] == "Bearer t1"
    first.close()


def test_a_new_token_gets_a_new_client_and_the_one_before_last_is_closed():
    clients = CdnClients(timeout=5, tls=TLS)
    first = clients.for_token(token("t1"))
    second = clients.for_token(token("t2"))
    assert second is not first and not first.is_closed  # an upload may still use it
    third = clients.for_token(token("t3"))
    assert first.is_closed and not second.is_closed
    assert third.headers["Authorization"] == "Bearer t3"
    second.close()
    third.close()


def test_tokens_are_asked_for_through_one_kept_client_and_read_as_fal_client_reads_them():
    asked = []

    def answer(request):
        asked.append((request.url.path, request.headers["Authorization"]))
        return httpx.Response(
            200,
            json={
                "token": f"t{len(asked)}",
                "token_type": "Bearer",
                "base_url": "https://v3.fal.media",
                "expires_at": "2000-01-01T00:00:00+00:00",  # expired: every get refreshes
            },
        )

    client = httpx.Client(transport=httpx.MockTransport(answer))
    manager = TokenManager(fal_client.client.AuthCredentials("Key", "id:secret"), client)
    first, second = manager.get_token(), manager.get_token()
    assert (first.token, second.token) == ("t1", "t2")
    assert first.base_upload_url == "https://v3.fal.media" and first.token_type == "Bearer"
    assert asked == [("/storage/auth/token", "Key id:secret")] * 2
    assert manager._client is client and not client.is_closed
    client.close()
