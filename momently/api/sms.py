"""The SMS provider's callbacks (Twilio-compatible), each verified by its request signature.

- ``POST /v1/sms/{workspace}/inbound``: a reply. STOP (and its synonyms) revokes every SMS
  purpose for that number, START re-subscribes, HELP answers with the help text, ``1``
  records the action of the last SMS the person got (the flow's goal, like a tap on its
  link). Every reply from a known person is also a ``Message Replied`` event. Answers are
  TwiML.
- ``POST /v1/sms/inbound``: the same, for every workspace: routed by the receiving number
  (``To``) to the workspace whose SMS configuration lists it.
- ``POST /v1/sms/{workspace}/status``: delivery status. ``delivered`` becomes a ``Message
  Delivered`` event, ``undelivered``/``failed`` a final ``Message Failed``, each with the
  provider id.

The signature covers the URL the provider called, so it is checked against this server's
public URL (``MOMENTLY_PUBLIC_URL``) when set, as a proxy in front changes what we see. The key
is the workspace's own auth token when it has its own SMS account, the process-level one
otherwise.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from momently.api.errors import ApiError, documented
from momently.channels.sms import SmsChannel, valid_signature
from momently.domain import consent
from momently.domain.actions import Action, link_ttl, tap_tracks
from momently.domain.event import BatchDefaults, Event, normalize
from momently.domain.message import declared_event
from momently.domain.profile import Profile, normalize_phone
from momently.domain.timestamps import to_millis
from momently.services import Services
from momently.store.consent import phone_key
from momently.store.definitions import UnknownDefinition

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_WORDS = frozenset({"START", "UNSTOP", "YES", "OPTIN"})
HELP_WORDS = frozenset({"HELP", "INFO"})
ACTION_WORDS = frozenset({"1"})
MAX_BODY = 64 * 1024
CALLBACK_ERRORS = documented(
    {
        400: "request_too_large or invalid_request (a required field is missing)",
        403: "invalid_signature: X-Twilio-Signature does not match",
        404: "sms_not_configured or workspace_not_found",
    }
)


def twiml(message: str | None = None) -> Response:
    inner = f"<Message>{escape(message)}</Message>" if message else ""
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>', media_type="application/xml"
    )


def router(services: Services) -> APIRouter:
    r = APIRouter(tags=["sms"])
    settings = services.settings

    def auth_token(workspace_id: str) -> str | None:
        """The workspace's own account's token, or (without one) the process-level token."""
        channel = services.channels.channels_for(workspace_id).get("sms")
        if isinstance(channel, SmsChannel):
            return channel.auth_token
        if services.channel_configs.stored(workspace_id, "sms"):
            return None  # its own account, unusable: never another account's token
        return settings.sms_auth_token

    async def verified(request: Request, workspace_id: str | None) -> tuple[str, dict[str, str]]:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise ApiError(400, "request_too_large", "callback body too large")
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if workspace_id is None:
            to = normalize_phone(params.get("To"))
            owner = await run_in_threadpool(services.channel_configs.workspace_for_number, to) if to else None
            if owner is None:
                raise ApiError(404, "number_not_configured", "no workspace receives SMS on this number")
            workspace_id = owner
        token = await run_in_threadpool(auth_token, workspace_id)
        if not token:
            raise ApiError(
                404, "sms_not_configured", "configure the workspace's SMS channel to receive SMS callbacks"
            )
        base = (settings.public_url or str(request.base_url)).rstrip("/")
        url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if not valid_signature(token, url, params, request.headers.get("X-Twilio-Signature")):
            raise ApiError(403, "invalid_signature", "X-Twilio-Signature does not match this request")
        if await run_in_threadpool(services.workspaces.get, workspace_id) is None:
            raise ApiError(404, "workspace_not_found", f"no workspace {workspace_id!r}")
        return workspace_id, params

    async def log_event(workspace_id: str, raw: dict[str, Any]) -> None:
        ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=services.clock.now())
        if isinstance(ev, Event):
            await services.writer.append(workspace_id, [ev])

    def person(workspace_id: str, phone: str) -> Profile | None:
        pid = services.profiles.person_by_phone(workspace_id, phone)
        return services.profiles.get(workspace_id, pid) if pid else None

    @r.post(
        "/v1/sms/inbound",
        summary="Provider webhook: an SMS reply, routed by the receiving number",
        responses=CALLBACK_ERRORS,
    )
    async def inbound_by_number(request: Request) -> Response:
        return await reply(*await verified(request, None))

    @r.post(
        "/v1/sms/{workspace_id}/inbound",
        summary="Provider webhook: an SMS reply (TwiML answer)",
        responses=CALLBACK_ERRORS,
    )
    async def inbound(workspace_id: str, request: Request) -> Response:
        return await reply(*await verified(request, workspace_id))

    async def reply(workspace_id: str, params: dict[str, str]) -> Response:
        phone = normalize_phone(params.get("From"))
        if phone is None:
            raise ApiError(400, "invalid_request", "From is required")
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        text = params.get("Body", "").strip()
        word = text.upper()
        who = await run_in_threadpool(person, workspace_id, phone)
        user_id = who.user_id if who else None
        anon_id = who.anonymous_id if who else None
        now_ms = to_millis(services.clock.now())
        answer: str | None = None
        keyword: str | None = None
        if word in STOP_WORDS:
            keyword = "stop"
            grants = consent.stop_contact(
                user_id,
                phone_key(phone),
                at_ms=now_ms,
                source="sms_stop",
                channel="sms",
                include_transactional=True,
                note=f"SMS reply {word}",
                ref=f"sms:{sid}",
            )
            await run_in_threadpool(services.consent.record, workspace_id, grants)
            answer = "You are unsubscribed and will get no more messages. Reply START to resubscribe."
        elif word in START_WORDS:
            keyword = "start"
            grant = consent.Grant(
                user_id, phone_key(phone), "sms", "*", True, "sms_start", now_ms, note=f"SMS reply {word}"
            )
            await run_in_threadpool(services.consent.record, workspace_id, [grant])
            answer = "You are subscribed again. Reply STOP to unsubscribe."
        elif word in HELP_WORDS:
            keyword = "help"
            answer = settings.sms_help_text
        elif word in ACTION_WORDS and who is not None:
            keyword = "action"
            answer = await act(workspace_id, who, now_ms)
        if who is not None:
            await log_event(
                workspace_id,
                {
                    "type": "track",
                    "event": "Message Replied",
                    "userId": user_id,
                    "anonymousId": anon_id,
                    "messageId": f"sms-in:{sid}" if sid else None,
                    "properties": {"channel": "sms", "provider_id": sid, "keyword": keyword, "text": text},
                },
            )
        return twiml(answer)

    async def act(workspace_id: str, who: Profile, now_ms: int) -> str:
        """``1`` answers the person's last SMS like a tap on its link, if still in time: a
        ``Message Clicked`` and the action's declared event, if any (never the goal itself)."""
        recent = await run_in_threadpool(
            services.outbox.recent_sent, workspace_id, who.person_id, channel="sms", limit=20
        )
        for d in recent:
            try:
                flow = await run_in_threadpool(
                    services.definitions.get, workspace_id, "flow", d.flow_id, d.flow_version
                )
            except UnknownDefinition:
                continue
            if now_ms - d.updated_ms > link_ttl(flow.body) * 1000:
                return "Sorry, that message has expired."
            message = flow.body.get("message")
            action = Action(
                delivery_key=d.key,
                flow_id=d.flow_id,
                person_id=d.person_id,
                user_id=who.user_id,
                anonymous_id=who.anonymous_id,
                event=declared_event(message if isinstance(message, dict) else {}, d.variant, "sms"),
                label=None,
                redirect=None,
                flow_version=d.flow_version,
                variant=d.variant,
                channel="sms",
            )
            for raw in tap_tracks(action, via="sms_reply"):
                await log_event(workspace_id, raw)
            return "Thanks, done."
        return "Sorry, there is nothing to answer."

    @r.post(
        "/v1/sms/{workspace_id}/status",
        summary="Provider webhook: delivery status of a sent SMS",
        responses={**CALLBACK_ERRORS, 204: {"description": "nothing to record"}},
    )
    async def status(workspace_id: str, request: Request) -> Response:
        workspace_id, params = await verified(request, workspace_id)
        sid = params.get("MessageSid") or params.get("SmsSid")
        state = params.get("MessageStatus") or params.get("SmsStatus")
        if not sid or not state:
            raise ApiError(400, "invalid_request", "MessageSid and MessageStatus are required")
        if state not in ("delivered", "undelivered", "failed"):
            return Response(status_code=204)  # queued, sending, sent: nothing new for funnels
        d = await run_in_threadpool(services.outbox.by_provider_id, workspace_id, sid)
        if d is None:
            return Response(status_code=204)
        who = await run_in_threadpool(services.profiles.get, workspace_id, d.person_id)
        props: dict[str, Any] = {
            "delivery_id": d.id,
            "delivery_key": d.key,
            "flow_id": d.flow_id,
            "channel": "sms",
            "provider_id": sid,
        }
        if state == "delivered":
            name = "Message Delivered"
        else:
            name = "Message Failed"
            props.update(reason=f"sms_{params.get('ErrorCode') or state}", final=True, after_sent=True)
        await log_event(
            workspace_id,
            {
                "type": "track",
                "event": name,
                "userId": who.user_id if who else None,
                "anonymousId": who.anonymous_id if who else None,
                "messageId": f"sms-status:{sid}:{state}",
                "properties": props,
            },
        )
        return Response(status_code=204)

    return r
