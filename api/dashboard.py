"""The operator's dashboard: ``GET /`` (the page) and ``GET /static/{path}`` (its assets).

Plain HTML/JS under ``api/static/`` with one vendored charting library (uPlot, MIT, in
``static/vendor/uplot`` with its licence): no CDN, so it works on an offline site. The page needs
no token to load; its script sends ``Authorization: Bearer <token>`` on API calls (and
``?token=`` on the WebSocket) when the operator has given one (``/?token=...`` once, or the
form on the page; kept in the browser's localStorage).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The page loads only its own files and talks only to this server (HTTP and WebSocket).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=300"}

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=FileResponse)
async def dashboard() -> FileResponse:
    """The dashboard page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_PAGE_HEADERS)


@router.get("/favicon.ico")
async def favicon() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/static/{path:path}", response_class=FileResponse)
async def static_file(path: str) -> FileResponse:
    """A file under api/static/ (nothing outside it: ``..`` and links out are refused)."""
    target = (STATIC_DIR / path).resolve()
    if not target.is_relative_to(STATIC_DIR) or not target.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if target.suffix == ".js":
        media_type = "text/javascript"
    return FileResponse(target, media_type=media_type, headers=_ASSET_HEADERS)
