"""One-tap actions: ``/a/{workspace}/{token}``.

``GET`` records nothing: mail security scanners and link previews fetch every URL in a
message. It checks the link and shows a page that submits itself (``POST`` to the same
address) in the person's browser, with a button where scripts do not run. ``POST`` records
the tap for the person the link was sent to (``Message Clicked``, and the action's declared
event if it has one: ``domain.actions.tap_tracks``), durably, then redirects to the action's
URL or shows a small confirmation page. The URL was checked against the flow's link hosts
when the link was made.
"""

from __future__ import annotations

import html
from urllib.parse import urlsplit

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from momently.api.errors import LINK_PAGES
from momently.domain.actions import Action, ExpiredAction, InvalidAction, read, tap_tracks
from momently.domain.event import BatchDefaults, Event, normalize
from momently.engine.log_writer import WriterStopped
from momently.services import Services

PAGE = """<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title>
<body style="font:16px system-ui,sans-serif;display:grid;place-items:center;min-height:90vh;margin:0">
<main style="text-align:center;max-width:24rem;padding:1rem"><h1 style="font-size:1.4rem">{title}</h1>
<p>{text}</p></main></body></html>"""

CONFIRM = """<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex">
<title>{label}</title>
<body style="font:16px system-ui,sans-serif;display:grid;place-items:center;min-height:90vh;margin:0">
<main style="text-align:center;max-width:24rem;padding:1rem">
<form method="post" id="act"><button style="font:inherit;padding:.6rem 1.2rem">{label}</button></form>
<script>document.getElementById("act").submit()</script></main></body></html>"""


def page(status: int, title: str, text: str) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), text=html.escape(text)), status_code=status)


def router(services: Services) -> APIRouter:
    r = APIRouter(tags=["actions"])

    async def decode(workspace_id: str, token: str) -> Action | Response:
        if await run_in_threadpool(services.workspaces.get, workspace_id) is None:
            return page(404, "Link not found", "This link does not lead anywhere.")
        secret = await run_in_threadpool(
            services.workspaces.signing_key, workspace_id, now=services.clock.now()
        )
        try:
            return read(secret, token, now=services.clock.now)
        except ExpiredAction:
            return page(
                410, "This link has expired", "It was only valid for a while. Open the app to carry on."
            )
        except InvalidAction:
            return page(400, "This link is not valid", "It may have been cut short when it was copied.")

    @r.get(
        "/a/{workspace_id}/{token}",
        summary="A one-tap action link: a page that submits the action (records nothing)",
        response_class=HTMLResponse,
        responses=LINK_PAGES,
    )
    async def confirm_action(workspace_id: str, token: str) -> Response:
        action = await decode(workspace_id, token)
        if isinstance(action, Response):
            return action
        label = html.escape(action.label or "Continue")
        return HTMLResponse(CONFIRM.format(label=label), headers={"Cache-Control": "no-store"})

    @r.post(
        "/a/{workspace_id}/{token}",
        summary="Take a one-tap action: records the tap, then redirects",
        response_class=HTMLResponse,
        responses={**LINK_PAGES, 303: {"description": "recorded; on to the action's page"}},
    )
    async def take_action(workspace_id: str, token: str) -> Response:
        action = await decode(workspace_id, token)
        if isinstance(action, Response):
            return action
        events: list[Event] = []
        for raw in tap_tracks(action, via="one_tap"):
            ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=services.clock.now())
            if not isinstance(ev, Event):
                return page(400, "This link is not valid", ev.message)
            events.append(ev)
        try:
            await services.writer.append(workspace_id, events)
        except WriterStopped:
            return page(503, "Please try again", "We could not record that just now.")
        if action.redirect and urlsplit(action.redirect).scheme in ("http", "https"):
            return RedirectResponse(action.redirect, status_code=303)
        return page(200, "Done", f"{action.label or 'Your answer'}: recorded. You can close this page.")

    return r
