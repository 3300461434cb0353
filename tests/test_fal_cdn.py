"""The CDN clients of fal uploads: one per token, and an old one closed only when safe."""

from types import SimpleNamespace

from image2model.generators.fal_connection import CdnClients


def token(value):
    """Return a CDN token as fal-client's token manager hands it out."""
    return SimpleNamespace(token=value, token_type="Bearer")


def test_uploads_under_one_token_share_one_client_that_sends_it():
    clients = CdnClients(timeout=5)
    first = clients.for_token(token("t1"))
    assert clients.for_token(token("t1")) is first
    assert first.headers["Authorization"] == "Bearer t1"
    first.close()


def test_a_new_token_gets_a_new_client_and_the_one_before_last_is_closed():
    clients = CdnClients(timeout=5)
    first = clients.for_token(token("t1"))
    second = clients.for_token(token("t2"))
    assert second is not first and not first.is_closed  # an upload may still use it
    third = clients.for_token(token("t3"))
    assert first.is_closed and not second.is_closed
    assert third.headers["Authorization"] == "Bearer t3"
    second.close()
    third.close()
