"""What a workspace's own channel configuration holds, which parts are secret, and how it is
shown. Pure: the store encrypts the secret part, the registry builds channels from it.

| channel | settings (shown) | secrets (stored encrypted, shown masked) |
| --- | --- | --- |
| email | `from`, `smtp_url` (password masked) | `smtp_url` |
| sms | `account_sid`, `from`, `numbers`, `base_url` | `auth_token` |
| webhook (named destinations) | `url` | `secret` |
| push | `vapid_subject` | `vapid_private_key` |

A workspace with no configuration of its own for a channel uses the process-level settings
(a single-workspace install); one with its own never falls back to them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from momently.domain.profile import normalize_phone

CONFIGURABLE: Final = ("email", "sms", "webhook", "push")
NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
DEFAULT_DESTINATION: Final = "default"
MASK: Final = "********"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    secret: bool = False
    required: bool = True
    kind: str = "text"  # text | list (of strings)


FIELDS: Final[dict[str, tuple[Field, ...]]] = {
    "email": (Field("smtp_url", secret=True), Field("from")),
    "sms": (
        Field("account_sid"),
        Field("auth_token", secret=True),
        Field("from"),
        Field("numbers", required=False, kind="list"),
        Field("base_url", required=False),
    ),
    "webhook": (Field("url"), Field("secret", secret=True)),
    "push": (Field("vapid_private_key", secret=True), Field("vapid_subject", required=False)),
}


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One channel (or one webhook destination) of one workspace, in clear, in memory only."""

    workspace_id: str
    channel: str
    name: str  # the webhook destination; "" for other channels
    settings: Mapping[str, Any]
    secrets: Mapping[str, str]

    def value(self, field: str) -> Any:
        return self.secrets[field] if field in self.secrets else self.settings.get(field)


def instance_name(channel: str, name: str | None) -> str:
    """The stored instance name: webhooks have named destinations, other channels one each."""
    if channel not in CONFIGURABLE:
        raise ConfigError(f"unknown channel {channel!r}; configurable: {', '.join(CONFIGURABLE)}")
    if channel != "webhook":
        if name:
            raise ConfigError(f"only webhooks have named destinations, not {channel}")
        return ""
    name = name or DEFAULT_DESTINATION
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"destination name {name!r}: lowercase letters, digits, - and _")
    return name


def split(channel: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Checks ``values`` (every required field, no unknown one) and splits them into the
    public settings and the secrets. Raises ConfigError."""
    fields = {f.name: f for f in FIELDS[channel]}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {channel} setting {unknown[0]!r}; known: {', '.join(fields)}")
    settings: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for f in fields.values():
        v = values.get(f.name)
        if v is None or v == "" or v == []:
            if f.required:
                raise ConfigError(f"{channel} needs {f.name!r}")
            continue
        if f.kind == "list":
            items = v.split(",") if isinstance(v, str) else v
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ConfigError(f"{f.name!r} must be a list of strings")
            settings[f.name] = [i.strip() for i in items if i.strip()]
        elif not isinstance(v, str):
            raise ConfigError(f"{f.name!r} must be a string")
        elif f.secret:
            secrets[f.name] = v
        else:
            settings[f.name] = v
    _check(channel, settings, secrets)
    return settings, secrets


def _check(channel: str, settings: dict[str, Any], secrets: dict[str, str]) -> None:
    if channel == "sms":
        numbers = []
        for n in settings.get("numbers") or []:
            phone = normalize_phone(n)
            if phone is None:
                raise ConfigError(f"number {n!r} is not a phone number")
            numbers.append(phone)
        sender = settings["from"]
        if not sender.startswith("MG"):
            phone = normalize_phone(sender)
            if phone is None:
                raise ConfigError(f"'from' {sender!r} is neither a phone number nor a messaging service SID")
            settings["from"] = phone
            if phone not in numbers:
                numbers.insert(0, phone)
        settings["numbers"] = numbers
    elif channel == "webhook":
        parts = urlsplit(settings["url"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("'url' must be an http(s) URL")
        if not secrets["secret"].startswith("whsec_"):
            raise ConfigError("'secret' must be a Standard Webhooks secret, whsec_<base64>")
    elif channel == "email":
        scheme = urlsplit(secrets["smtp_url"]).scheme
        if scheme not in ("smtp", "smtps", "smtp+insecure"):
            raise ConfigError("'smtp_url' must be smtp://, smtps:// or smtp+insecure://")


def mask_url(url: str) -> str:
    """The URL with its password replaced by the mask."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def shown(config: ChannelConfig) -> dict[str, Any]:
    """What the CLI and the admin API show: settings in clear, secrets masked."""
    out: dict[str, Any] = {"channel": config.channel}
    if config.channel == "webhook":
        out["destination"] = config.name
    out.update(config.settings)
    for key, secret in config.secrets.items():
        out[key] = mask_url(secret) if key == "smtp_url" else MASK
    return out


def merged(existing: ChannelConfig | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """An update over what is stored: a secret left out (or sent back masked, as shown) keeps
    its stored value, so a shown configuration can be edited and put back."""
    out = dict(values)
    if existing is not None:
        for key, secret in existing.secrets.items():
            given = out.get(key)
            if given is None or given == MASK or (key == "smtp_url" and given == mask_url(secret)):
                out[key] = secret
    return out
