"""Two CORS policies: one for the routes web pages call with the public write key, one for
the admin API.

Ingest, the in-app inbox and push subscriptions are called from visitors' browsers:
analytics.js posts with ``credentials: 'include'``, ``navigator.sendBeacon`` is always
credentialed, and a JSON body makes the browser ask first (a preflight). A browser accepts
a credentialed answer only when it names the page's origin (never ``*``) and allows
credentials, so these routes echo an allowed ``Origin`` back, with ``Vary: Origin``. They
read no cookies, so allowing credentials lends a page nothing it did not have.

The admin API is called with an admin token, which has no business in a web page: it sends
no CORS headers at all (a browser then refuses to let a page read it) unless
``MOMENTLY_ADMIN_CORS_ORIGINS`` names the origins of a trusted dashboard, and it never
allows credentials.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from momently.api.errors import error_response

# What the tracking SDKs and the widget send: Basic auth with the write key, JSON (which
# makes a preflight), gzip bodies, analytics.js's retry counter, RudderStack's AnonymousId.
BROWSER_HEADERS = ("Authorization", "Content-Type", "Content-Encoding", "X-Retry-Count", "AnonymousId")
BROWSER_METHODS = ("GET", "POST", "DELETE")
ADMIN_HEADERS = ("Authorization", "Content-Type")
ADMIN_METHODS = ("GET", "POST", "PUT", "DELETE")


class _Cors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in our error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        headers = {
            k: v for k, v in response.headers.items() if k.lower().startswith(("access-control", "vary"))
        }
        refused = bytes(response.body).decode()
        return error_response(400, "cors_refused", f"{refused} for this route", headers)


class CorsPolicies:
    """ASGI middleware: the browser policy on ``browser_paths`` (exact) and
    ``browser_prefixes``, the admin policy (by default: none) everywhere else."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        browser_origins: Collection[str],
        admin_origins: Collection[str],
        browser_paths: Collection[str],
        browser_prefixes: tuple[str, ...],
    ) -> None:
        self.app = app
        self.browser_paths = frozenset(browser_paths)
        self.browser_prefixes = browser_prefixes
        self.browser: ASGIApp = _Cors(
            app,
            allow_origins=browser_origins,
            allow_methods=BROWSER_METHODS,
            allow_headers=BROWSER_HEADERS,
            allow_credentials=True,
            max_age=86400,
        )
        self.admin: ASGIApp = app
        if admin_origins:
            self.admin = _Cors(
                app, allow_origins=admin_origins, allow_methods=ADMIN_METHODS, allow_headers=ADMIN_HEADERS
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path in self.browser_paths or path.startswith(self.browser_prefixes):
                await self.browser(scope, receive, send)
                return
            await self.admin(scope, receive, send)
            return
        await self.app(scope, receive, send)
