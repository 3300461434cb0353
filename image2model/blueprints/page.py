"""The web page at `/`: static HTML, CSS and JavaScript modules, no build step."""

from flask import Blueprint, current_app, send_from_directory

bp = Blueprint("page", __name__)

# The page loads only from this server: its own files, the vendored viewer, and blob: URLs of
# models it fetched with the key; model-viewer sets inline styles on its shadow DOM.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' blob: data:; connect-src 'self' blob: data:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@bp.get("/")
def index():
    """Serve the page; the browser revalidates it by ETag."""
    response = send_from_directory(current_app.static_folder, "app/index.html", max_age=0)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
