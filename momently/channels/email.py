"""The email channel: SMTP (aiosmtplib), multipart plain text + HTML.

Marketing messages carry ``List-Unsubscribe`` with an HTTPS link and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), so mail clients show their
own unsubscribe button and a single POST revokes consent. The ``Message-ID`` is unique per
message (a random part at the From domain), as RFC 5322 asks: one derived from the delivery key
alone would be the same on every install. The delivery key travels as ``X-Momently-Delivery``,
stable across retries, for receivers that de-duplicate.

TLS is required by default: ``smtp://`` must be upgraded with STARTTLS before the password or
the message goes out, ``smtps://`` is TLS from the first byte. A server that offers no STARTTLS
is refused (``smtp_tls_required``), unless the URL says ``smtp+insecure://`` or
``MOMENTLY_SMTP_REQUIRE_TLS=false`` (local test servers).

SMTP replies map onto the dispatcher's rules: 4xx replies, timeouts and dropped connections
are retried; 5xx replies (unknown mailbox, rejected content) are permanent and fall back to
the next channel of the plan.
"""

from __future__ import annotations

import asyncio
import html
import threading
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import unquote, urlsplit

import aiosmtplib

from momently.channels.base import Failed, Outgoing, Result, Sent
from momently.domain.profile import Profile


class SmtpConfigError(ValueError):
    pass


SCHEMES = ("smtp", "smtps", "smtp+insecure")


def parse_smtp_url(url: str, *, require_tls: bool = True) -> dict[str, object]:
    """``smtp://user:pass@host:587`` (STARTTLS, required unless ``require_tls`` is off),
    ``smtps://host:465`` (TLS from the first byte) or ``smtp+insecure://host:25`` (plain text,
    for local test servers), into aiosmtplib keyword arguments."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise SmtpConfigError(
            "the SMTP URL must be smtp://HOST[:PORT], smtps://HOST[:PORT] or smtp+insecure://HOST[:PORT]"
        )
    implicit = parts.scheme == "smtps"
    if implicit:
        start_tls: bool | None = False
    elif parts.scheme == "smtp+insecure":
        start_tls = None  # upgrade when offered, send in clear when not
    else:
        start_tls = True if require_tls else None
    return {
        "hostname": parts.hostname,
        "port": parts.port or (465 if implicit else 587),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "use_tls": implicit,
        "start_tls": start_tls,
    }


def build_message(outgoing: Outgoing, to: str, sender: str) -> EmailMessage:
    m = outgoing.message
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = m.title or ""
    msg["Date"] = formatdate(localtime=False)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["X-Momently-Delivery"] = outgoing.key
    if outgoing.unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{outgoing.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"

    text = [m.body]
    if m.action_url:
        text.append(f"{m.action_label or 'Open'}: {m.action_url}")
    if outgoing.unsubscribe_url:
        text.append(f"Unsubscribe: {outgoing.unsubscribe_url}")
    msg.set_content("\n\n".join(text))

    paragraphs = "".join(
        f'<p style="margin:0 0 16px">{html.escape(p)}</p>' for p in m.body.split("\n\n") if p.strip()
    )
    button = (
        f'<p style="margin:24px 0"><a href="{html.escape(m.action_url, quote=True)}" '
        'style="background:#1a56db;color:#fff;padding:12px 20px;border-radius:6px;'
        f'text-decoration:none;display:inline-block">{html.escape(m.action_label or "Open")}</a></p>'
        if m.action_url
        else ""
    )
    footer = (
        f'<p style="margin-top:32px;font-size:12px;color:#6b7280"><a href="'
        f'{html.escape(outgoing.unsubscribe_url, quote=True)}" style="color:#6b7280">Unsubscribe</a></p>'
        if outgoing.unsubscribe_url
        else ""
    )
    msg.add_alternative(
        '<!doctype html><html><body style="font:16px/1.5 system-ui,sans-serif;color:#111827;'
        f'max-width:560px;margin:0 auto;padding:24px">{paragraphs}{button}{footer}</body></html>',
        subtype="html",
    )
    return msg


class EmailChannel:
    name = "email"

    def __init__(
        self, smtp_url: str, sender: str, *, timeout: float = 10.0, require_tls: bool = True
    ) -> None:
        self.smtp = parse_smtp_url(smtp_url, require_tls=require_tls)
        self.sender = sender
        self.timeout = timeout
        # aiosmtplib is asyncio; the dispatcher's send threads hand coroutines to one loop
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="momently-smtp", daemon=True)
        self._thread.start()

    def address(self, workspace_id: str, profile: Profile) -> str | None:
        return profile.email

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def send(self, outgoing: Outgoing, address: str) -> Result:
        msg = build_message(outgoing, address, self.sender)
        coro = aiosmtplib.send(msg, timeout=self.timeout, **self.smtp)  # type: ignore[arg-type]
        try:
            asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=self.timeout * 3)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            return Failed(f"smtp_{codes[0] if codes else 550}_recipient_refused", retryable=_transient(codes))
        except aiosmtplib.SMTPAuthenticationError as exc:
            return Failed(f"smtp_{exc.code}_authentication_failed", retryable=False)
        except (aiosmtplib.SMTPTimeoutError, TimeoutError):
            return Failed("timeout", retryable=True)
        except aiosmtplib.SMTPResponseException as exc:
            return Failed(f"smtp_{exc.code}", retryable=_transient([exc.code]))
        except aiosmtplib.SMTPException as exc:
            if "STARTTLS" in str(exc):  # TLS required, and this server does not offer it
                return Failed("smtp_tls_required", retryable=False)
            return Failed(f"connection_error: {type(exc).__name__}", retryable=True)
        except OSError as exc:
            return Failed(f"connection_error: {type(exc).__name__}", retryable=True)
        return Sent(provider_id=msg["Message-ID"])


def _transient(codes: list[int]) -> bool:
    return bool(codes) and all(400 <= c < 500 for c in codes)
