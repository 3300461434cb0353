"""fal-client as this server uses it: one client per app, one TLS context, one CDN connection
pool, no resubmit.

fal-client is pinned (setup.cfg): the few places below that reach past its public API are
kept here, and the FAL stand-in tests exercise each of them.
"""

import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import fal_client
import fal_client.client
import httpx

# A queue submit whose answer was lost in one of these ways may have been accepted (and billed).
LOST_ANSWER = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


class MaybeSubmitted(Exception):
    """The submit was sent but its answer was lost: FAL may have accepted (and will bill) it."""


class NoCookies(httpx.Cookies):
    """An empty cookie jar that keeps nothing it is handed."""

    def extract_cookies(self, response):
        """Keep no cookie of the response."""


class CookielessClient(httpx.Client):
    """An httpx client that neither keeps nor sends cookies (its `cookies=` argument is unused)."""

    # FAL's queue, storage and file links authenticate by header and need no cookie, and httpx
    # reads every response into its jar: a tenth of a status poll's CPU per client it passes
    # (two for queue calls). httpx reaches its jar through this property only, which
    # tests/test_fal_cookies.py checks.

    @property
    def cookies(self):
        """Return an empty jar that stays empty."""
        return NoCookies()


class BackupDomains(fal_client.client.BackupDomainTransport):
    """fal-client's fallback to FAL's backup domains, through a client that keeps no cookies."""

    def __init__(self, tls):
        # fal-client's __init__ only builds this client, so it is not called: it would build a
        # TLS context of its own. fal-client sends through a client of its own, so proxies
        # apply per domain; the same client without a cookie jar, on the app's TLS context.
        self._client = CookielessClient(follow_redirects=False, verify=tls)


class SubmitOnceTransport(httpx.BaseTransport):
    """Lets fal-client retry everything but a queue submit whose answer was lost.

    fal-client retries timeouts and transport errors of every call, submits included, which
    could create (and bill) a second request. MaybeSubmitted is no httpx error, so fal-client's
    retry loop lets it through unretried.
    """

    def __init__(self, inner):
        self._inner = inner

    def handle_request(self, request):
        """Send the request; turn a lost submit answer into MaybeSubmitted."""
        submit = request.method == "POST" and str(request.url).startswith(
            fal_client.client.QUEUE_URL_FORMAT
        )
        try:
            response = self._inner.handle_request(request)
            if submit:
                # The body too is read here: the client would read it after this returns, and
                # an answer lost halfway would be retried there.
                response.read()
            return response
        except LOST_ANSWER as error:
            if submit:
                raise MaybeSubmitted(type(error).__name__) from error
            raise

    def close(self):
        """Close the wrapped transport."""
        self._inner.close()


class CdnClients:
    """One CDN client per upload token, so uploads reuse TLS connections and trust settings."""

    def __init__(self, timeout, tls):
        self.timeout = timeout
        self.tls = tls
        self._lock = threading.Lock()
        self._token = None
        self._client = None
        self._retired = None

    def for_token(self, token):
        """Return the client that sends `token`, replacing the one of an expired token."""
        with self._lock:
            if self._token != token.token:
                # The client of the token before is closed only now: no upload still uses it.
                if self._retired is not None:
                    self._retired.close()
                self._retired = self._client
                self._client = CookielessClient(
                    headers={
                        "Authorization": f"{token.token_type} {token.token}",
                        "User-Agent": fal_client.client.USER_AGENT,
                    },
                    timeout=self.timeout,
                    verify=self.tls,
                )
                self._token = token.token
            return self._client


class TokenManager(fal_client.client.CDNTokenManager):
    """fal-client's CDN token manager, asking for each token through one kept client."""

    def __init__(self, auth, client):
        super().__init__(auth)
        self._client = client

    def _refresh_token(self):
        # fal-client opens a new client for every token: a TLS context built from the whole CA
        # bundle (tens of milliseconds) and a handshake, on the way of the first upload.
        response = self._client.post(self._url, headers=self._headers, json={})
        response.raise_for_status()
        data = response.json()
        return fal_client.client.CDNToken(
            token=data["token"],
            token_type=data["token_type"],
            base_upload_url=data["base_url"],
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )


@dataclass(frozen=True)
class FalClient(fal_client.SyncClient):
    """fal-client's SyncClient with one TLS context for all its clients, keeping its CDN and
    token clients, never resending a submit."""

    # Trust as httpx reads it (SSL_CERT_FILE, SSL_CERT_DIR, else certifi), read once.
    tls: ssl.SSLContext = field(default_factory=httpx.create_ssl_context, repr=False, compare=False)
    # False sends `X-Fal-Store-IO: 0`: FAL then keeps no copy of inputs and outputs (FAL_STORE_IO).
    store_io: bool = True

    @cached_property
    def _client(self):
        # As fal-client builds it, with the submit guard around its transport, without cookies.
        return CookielessClient(
            transport=SubmitOnceTransport(BackupDomains(self.tls)),
            headers={
                "Authorization": self._auth.header_value,
                "User-Agent": fal_client.client.USER_AGENT,
                **({} if self.store_io else {"X-Fal-Store-IO": "0"}),
            },
            timeout=self.default_timeout,
            follow_redirects=True,
            verify=self.tls,
        )

    @cached_property
    def _token_manager(self):
        return TokenManager(self._auth, CookielessClient(verify=self.tls))

    @cached_property
    def _cdn_clients(self):
        return CdnClients(self.default_timeout, self.tls)

    def _get_cdn_client(self):
        # fal-client makes a new client (SSL context, connection) for every upload.
        return self._cdn_clients.for_token(self._token_manager.get_token())


def init_app(app):
    """Build the FAL clients now, after fork: no first request pays for their TLS set-up."""
    if app.config["FAL_KEY"]:
        client = client_for(app)
        client._client  # noqa: B018 - the cached properties build the queue and token clients
        client._token_manager  # noqa: B018
        download_client(app)


def client_for(app):
    """Return the app's fal-client, pointing storage at FAL_STORAGE_URL when one is set."""
    client = app.extensions.get("image2model.fal")
    if client is None:
        if app.config["FAL_STORAGE_URL"]:
            # fal-client has no setting for its storage hosts; a stand-in or proxy replaces both.
            fal_client.client.REST_URL = app.config["FAL_STORAGE_URL"]
            fal_client.client.CDN_URL = app.config["FAL_STORAGE_URL"]
        client = FalClient(key=app.config["FAL_KEY"], store_io=bool(app.config["FAL_STORE_IO"]))
        app.extensions["image2model.fal"] = client
    return client


def download_client(app):
    """Return the app's client for FAL's result files: public links, so it sends no key."""
    client = app.extensions.get("image2model.fal_files")
    if client is None:
        # Built once: the environment (proxies, SSL_CERT_FILE) is read here, not per download.
        client = CookielessClient(
            follow_redirects=True,
            timeout=httpx.Timeout(120.0, connect=10.0),
            verify=client_for(app).tls,
        )
        app.extensions["image2model.fal_files"] = client
    return client


def handle_for(app, row):
    """Re-attach to the stored FAL request by its id and URLs."""
    return fal_client.SyncRequestHandle(
        request_id=row["fal_request_id"],
        response_url=row["fal_response_url"],
        status_url=row["fal_status_url"],
        cancel_url=row["fal_cancel_url"],
        client=client_for(app)._client,
    )


def fetch_output(handle):
    """Return a completed request's output from its stored response URL.

    handle.get() would first poll the status again until COMPLETED, which the caller has
    just seen; this is its last step alone, with fal-client's retries and errors.
    """
    response = fal_client.client._maybe_retry_request(
        handle.client, "GET", handle.response_url, timeout=fal_client.client.QUEUE_POLL_TIMEOUT
    )
    return response.json()
