"""The SMS channel: a Twilio-compatible REST client, and the request signature that guards
the provider's callbacks to us.

A send is ``POST {base}/2010-04-01/Accounts/{sid}/Messages.json`` (form fields ``To``,
``From`` or ``MessagingServiceSid``, ``Body``, ``StatusCallback``) with HTTP Basic
``sid:token``; the reply's ``sid`` is the provider id that status callbacks refer to. The
delivery key goes along as ``Idempotency-Key`` for providers that honour it.

Callbacks carry ``X-Twilio-Signature``: base64 HMAC-SHA1, keyed with the auth token, over the
URL the provider called followed by every POST parameter's name and value, sorted by name.
A signature over the URL with or without its default port (``https://host:443/…``) is
accepted, as Twilio's own validator does.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import httpx

from momently.channels.base import Failed, Outgoing, Result, Sent, retry_after_ms
from momently.domain.profile import Profile

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# provider error codes that mean "this number can never get it": no point retrying
PERMANENT_CODES = frozenset({21211, 21214, 21408, 21610, 21612, 21614})


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    payload = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def valid_signature(auth_token: str, url: str, params: Mapping[str, str], given: str | None) -> bool:
    """As Twilio's own validator: the URL as we know it, and with its default port (``:443``,
    ``:80``) added or removed, since the provider may sign either form."""
    if given is None:
        return False
    return any(
        hmac.compare_digest(signature(auth_token, u, params).encode(), given.encode("utf-8", "surrogatepass"))
        for u in _port_forms(url)
    )


def _port_forms(url: str) -> list[str]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return [url]
    if default is None or port not in (None, default):
        return [url]
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    bare = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    return list(dict.fromkeys([url, bare, with_port]))


def sms_text(outgoing: Outgoing) -> str:
    """The body, then the one call to action as a one-tap link."""
    m = outgoing.message
    if m.action_url:
        return f"{m.body}\n{m.action_label + ': ' if m.action_label else ''}{m.action_url}"
    return m.body


class SmsChannel:
    name = "sms"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        sender: str,
        base_url: str,
        status_callback: str | None,
        timeout: float = 10.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token  # also the key the provider's callbacks are signed with
        self.sender = sender
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.status_callback = status_callback  # "{base}/v1/sms/{workspace}/status"
        self.client = httpx.Client(timeout=timeout, auth=(account_sid, auth_token))

    def address(self, workspace_id: str, profile: Profile) -> str | None:
        return profile.phone

    def close(self) -> None:
        self.client.close()

    def send(self, outgoing: Outgoing, address: str) -> Result:
        form = {"To": address, "Body": sms_text(outgoing)}
        form["MessagingServiceSid" if self.sender.startswith("MG") else "From"] = self.sender
        if self.status_callback:
            form["StatusCallback"] = self.status_callback.format(workspace=outgoing.workspace_id)
        try:
            reply = self.client.post(self.url, data=form, headers={"Idempotency-Key": outgoing.key})
        except httpx.TimeoutException:
            return Failed("timeout", retryable=True)
        except httpx.HTTPError as exc:
            return Failed(f"connection_error: {type(exc).__name__}", retryable=True)
        if 200 <= reply.status_code < 300:
            try:
                sid = reply.json().get("sid")
            except ValueError:
                sid = None
            return Sent(provider_id=str(sid) if sid else None)
        code: object = None
        with contextlib.suppress(ValueError):
            code = reply.json().get("code")
        if isinstance(code, int) and code in PERMANENT_CODES:
            return Failed(f"sms_{code}", retryable=False)
        return Failed(
            f"http_{reply.status_code}",
            retryable=reply.status_code in RETRYABLE_STATUS,
            retry_after_ms=retry_after_ms(reply.headers.get("retry-after")),
        )
