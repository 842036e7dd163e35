"""Unsubscribe links: ``/u/{workspace}/{token}``.

``POST`` unsubscribes: it is what mail clients send for RFC 8058 one-click unsubscribe
(``List-Unsubscribe=One-Click`` in a form body) and what the confirmation page's button
sends. ``GET`` only shows that page: link scanners and previews fetch every URL in a mail, so
a GET must never revoke anything. The revoke is a consent ledger record (source
``unsubscribe_link``) plus an ``Unsubscribed`` event in the log; using the link twice records
it once.
"""

from __future__ import annotations

import contextlib
import html

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from momently.api.actions import page
from momently.api.errors import LINK_PAGES
from momently.domain import consent
from momently.domain.actions import ExpiredAction, InvalidAction, Unsubscribe, read_unsubscribe
from momently.domain.event import BatchDefaults, Event, normalize
from momently.domain.timestamps import to_millis
from momently.engine.log_writer import WriterStopped
from momently.services import Services

FORM = """<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>Unsubscribe</title>
<body style="font:16px system-ui,sans-serif;display:grid;place-items:center;min-height:90vh;margin:0">
<main style="text-align:center;max-width:24rem;padding:1rem"><h1 style="font-size:1.4rem">Unsubscribe?</h1>
<p>You will no longer get {what} from us.</p>
<form method="post"><button style="font:inherit;padding:.6rem 1.2rem">Unsubscribe</button></form>
</main></body></html>"""


def router(services: Services) -> APIRouter:
    r = APIRouter(tags=["actions"])

    async def decode(workspace_id: str, token: str) -> Unsubscribe | Response:
        if await run_in_threadpool(services.workspaces.get, workspace_id) is None:
            return page(404, "Link not found", "This link does not lead anywhere.")
        secret = await run_in_threadpool(
            services.workspaces.signing_key, workspace_id, now=services.clock.now()
        )
        try:
            return read_unsubscribe(secret, token, now=services.clock.now)
        except ExpiredAction:
            return page(410, "This link has expired", "Use the link in a more recent message.")
        except InvalidAction:
            return page(400, "This link is not valid", "It may have been cut short when it was copied.")

    @r.get(
        "/u/{workspace_id}/{token}",
        summary="Unsubscribe confirmation page (changes nothing)",
        response_class=HTMLResponse,
        responses=LINK_PAGES,
    )
    async def confirm(workspace_id: str, token: str) -> Response:
        link = await decode(workspace_id, token)
        if isinstance(link, Response):
            return link
        what = f"{link.purpose} messages by {link.channel}".replace("in_app", "in-app")
        return HTMLResponse(FORM.format(what=html.escape(what)))

    @r.post(
        "/u/{workspace_id}/{token}",
        summary="Unsubscribe (RFC 8058 one-click, or the page's button)",
        response_class=HTMLResponse,
        responses=LINK_PAGES,
    )
    async def unsubscribe(workspace_id: str, token: str) -> Response:
        link = await decode(workspace_id, token)
        if isinstance(link, Response):
            return link
        ref = f"delivery:{link.delivery_key}"
        now = services.clock.now()

        def revoke() -> bool:
            grant = consent.Grant(
                link.user_id,
                link.anonymous_id,
                link.channel,
                link.purpose,
                False,
                "unsubscribe_link",
                to_millis(now),
                ref=ref,
            )
            with services.db.write() as conn:
                history = services.consent.history(
                    conn,
                    workspace_id,
                    user_ids=[link.user_id] if link.user_id else [],
                    anonymous_ids=[link.anonymous_id] if link.anonymous_id else [],
                )
                if any(rec.grant.ref == ref for rec in history):
                    return False
                services.consent.append(conn, workspace_id, [grant])
                return True

        await run_in_threadpool(revoke)
        raw = {
            "type": "track",
            "event": "Unsubscribed",
            "userId": link.user_id,
            "anonymousId": link.anonymous_id,
            "messageId": f"unsubscribe:{link.delivery_key}",
            "properties": {
                "channel": link.channel,
                "purpose": link.purpose,
                "delivery_key": link.delivery_key,
            },
        }
        ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=now)
        if isinstance(ev, Event):
            # the ledger record is what stops the messages, and it is committed already
            with contextlib.suppress(WriterStopped):
                await services.writer.append(workspace_id, [ev])
        return page(200, "You are unsubscribed", f"No more {link.purpose} messages by {link.channel}.")

    return r
