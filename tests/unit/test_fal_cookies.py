"""FAL's clients keep no cookies (nothing FAL sets is stored or sent back) and share one TLS
context per app."""

from types import SimpleNamespace

import httpx

from image2model.generators.fal_connection import (
    CdnClients,
    CookielessClient,
    client_for,
    download_client,
)
from tests.conftest import with_config


def cookie_setting_transport(seen_cookie_headers):
    """Return a transport that sets a cookie on every answer and records the Cookie sent;
    /moved redirects to /b."""

    def answer(request):
        seen_cookie_headers.append(request.headers.get("Cookie"))
        headers = {"Set-Cookie": "session=abc; Path=/"}
        if request.url.path == "/moved":
            return httpx.Response(302, headers={**headers, "Location": "/b"})
        return httpx.Response(200, headers=headers, json={})

    return httpx.MockTransport(answer)


def test_a_cookieless_client_stores_and_sends_no_cookie():
    seen = []
    with CookielessClient(transport=cookie_setting_transport(seen)) as client:
        client.get("https://queue.example/a")
        client.get("https://queue.example/b")
        assert len(client.cookies) == 0
    assert seen == [None, None]

    with httpx.Client(transport=cookie_setting_transport(seen := [])) as plain:
        plain.get("https://queue.example/a")
        plain.get("https://queue.example/b")
    assert seen == [None, "session=abc"]  # what a plain client would have sent back


def test_a_cookieless_client_sends_no_cookie_across_a_redirect():
    seen = []
    transport = cookie_setting_transport(seen)
    with CookielessClient(transport=transport, follow_redirects=True) as client:
        assert client.get("https://files.example/moved").status_code == 200
    assert seen == [None, None]


@with_config(FAL_KEY="test-key")
def test_every_client_of_fal_traffic_is_cookieless(app):
    queue = client_for(app)._client
    backup_domains = queue._transport._inner
    assert isinstance(queue, CookielessClient)
    assert isinstance(backup_domains._client, CookielessClient)
    assert isinstance(download_client(app), CookielessClient)
    assert isinstance(client_for(app)._token_manager._client, CookielessClient)
    cdn = CdnClients(timeout=5, tls=client_for(app).tls)
    cdn = cdn.for_token(SimpleNamespace(token="t", token_type="Bearer"))
    assert isinstance(cdn, CookielessClient)
    cdn.close()


def tls_context_of(client):
    """Return the TLS context an httpx client's own connections use (httpcore's pool)."""
    return client._transport._pool._ssl_context


@with_config(FAL_KEY="test-key")
def test_every_client_of_fal_traffic_shares_the_apps_one_tls_context(app, monkeypatch):
    built = []
    create = httpx.create_ssl_context
    monkeypatch.setattr(httpx, "create_ssl_context", lambda: built.append(1) or create())
    fal = client_for(app)  # built at start: no new context from here on
    cdn = fal._cdn_clients.for_token(SimpleNamespace(token="t", token_type="Bearer"))
    clients = [
        fal._client._transport._inner._client,  # the backup-domain client sends queue calls
        fal._token_manager._client,
        cdn,
        download_client(app),
    ]
    assert {id(tls_context_of(client)) for client in clients} == {id(fal.tls)}
    assert built == []
