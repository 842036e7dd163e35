"""Security headers on every response, added by one pure ASGI layer (no per-request objects
beyond a closure, so ingest does not pay for it).

- ``X-Content-Type-Options: nosniff``: a browser never runs a JSON error or an event echo
  as a script or a page.
- ``Content-Security-Policy: frame-ancestors 'none'``: no page of ours (one-tap answers,
  unsubscribe confirmations) can be framed by another site and clicked through unseen. The
  widget is a script other sites load, which framing rules do not touch.
- ``Referrer-Policy: no-referrer``: a one-tap link's token never leaves in a ``Referer``
  when its page redirects or links on.
- ``Cache-Control: no-store`` on everything but the public documents (the widget script and
  the API's description): profiles, events, exports, consent, inbox cards, deliveries and
  link pages are personal data no browser or proxy cache should keep. It replaces whatever
  the route set (the inbox stream's ``no-cache``).
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]
_NO_STORE = (b"cache-control", b"no-store")


class SecurityHeaders:
    """ASGI middleware; ``public_paths`` keep their own caching headers."""

    def __init__(self, app: ASGIApp, *, public_paths: Collection[str]) -> None:
        self.app = app
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope["path"] not in self.public_paths

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if private:
                    headers = [h for h in headers if h[0].lower() != b"cache-control"]
                    headers.append(_NO_STORE)
                message = {**message, "headers": headers + _ALWAYS}
            await send(message)

        await self.app(scope, receive, send_with_headers)
