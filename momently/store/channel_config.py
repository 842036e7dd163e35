"""Workspaces' own channel configuration, the secret part encrypted at rest.

Secrets are encrypted with Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under
``MOMENTLY_SECRETS_KEY``, a key kept outside the database: a copy of the database alone does
not reveal an SMTP password, an SMS auth token, a webhook signing secret or a VAPID key.
Settings that are not secret (sender, numbers, URLs) are stored in clear, so inbound SMS can be
routed by number and configurations listed without the key.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from momently.domain.channel_config import ChannelConfig, ConfigError
from momently.store.database import Database
from momently.store.schema import channel_configs


class SecretsKeyMissing(ConfigError):
    pass


def new_key() -> str:
    """A fresh MOMENTLY_SECRETS_KEY."""
    return Fernet.generate_key().decode()


class SecretBox:
    def __init__(self, key: str | None) -> None:
        self._fernet: Fernet | None = None
        if key:
            try:
                self._fernet = Fernet(key.encode())
            except ValueError:
                raise ConfigError(
                    "MOMENTLY_SECRETS_KEY must be 32 url-safe base64-encoded bytes "
                    "(`momently channels key` makes one)"
                ) from None

    def _need(self) -> Fernet:
        if self._fernet is None:
            raise SecretsKeyMissing(
                "set MOMENTLY_SECRETS_KEY to store channel secrets (`momently channels key` makes one)"
            )
        return self._fernet

    def seal(self, secrets: dict[str, str]) -> str:
        return self._need().encrypt(orjson.dumps(secrets)).decode()

    def open(self, token: str) -> dict[str, str]:
        try:
            raw = self._need().decrypt(token.encode())
        except InvalidToken:
            raise ConfigError("channel secrets cannot be decrypted with this MOMENTLY_SECRETS_KEY") from None
        value = orjson.loads(raw)
        return {str(k): str(v) for k, v in value.items()}


@dataclass(frozen=True, slots=True)
class StoredConfig:
    """One row, the secret part still sealed: enough to list or route without the key."""

    workspace_id: str
    channel: str
    name: str
    settings: dict[str, object]
    sealed: str
    updated_ms: int


class ChannelConfigs:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert

    def put(self, config: ChannelConfig, *, now_ms: int) -> None:
        sealed = self.box.seal(dict(config.secrets))
        stmt = self._insert(channel_configs).values(
            workspace_id=config.workspace_id,
            channel=config.channel,
            name=config.name,
            settings=orjson.dumps(dict(config.settings)).decode(),
            secret=sealed,
            updated_ms=now_ms,
        )
        with self.db.write() as conn:
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["workspace_id", "channel", "name"],
                    set_={
                        "settings": stmt.excluded.settings,
                        "secret": stmt.excluded.secret,
                        "updated_ms": stmt.excluded.updated_ms,
                    },
                )
            )

    def remove(self, workspace_id: str, channel: str, name: str) -> bool:
        c = channel_configs.c
        with self.db.write() as conn:
            gone = conn.execute(
                delete(channel_configs)
                .where(c.workspace_id == workspace_id, c.channel == channel, c.name == name)
                .returning(c.name)
            ).first()
        return gone is not None

    def stored(self, workspace_id: str | None = None, channel: str | None = None) -> list[StoredConfig]:
        c = channel_configs.c
        q = select(c.workspace_id, c.channel, c.name, c.settings, c.secret, c.updated_ms)
        if workspace_id is not None:
            q = q.where(c.workspace_id == workspace_id)
        if channel is not None:
            q = q.where(c.channel == channel)
        with self.db.read() as conn:
            rows = conn.execute(q.order_by(c.workspace_id, c.channel, c.name)).all()
        return [
            StoredConfig(str(w), str(ch), str(n), dict(orjson.loads(s)), str(sec), int(u))
            for w, ch, n, s, sec, u in rows
        ]

    def opened(self, row: StoredConfig) -> ChannelConfig:
        """The row with its secrets decrypted; raises ConfigError without the right key."""
        return ChannelConfig(row.workspace_id, row.channel, row.name, row.settings, self.box.open(row.sealed))

    def get(self, workspace_id: str, channel: str, name: str) -> ChannelConfig | None:
        for row in self.stored(workspace_id, channel):
            if row.name == name:
                return self.opened(row)
        return None

    def workspace_for_number(self, number: str) -> str | None:
        """The workspace whose SMS configuration lists this receiving number."""
        for row in self.stored(channel="sms"):
            numbers = row.settings.get("numbers")
            if isinstance(numbers, list) and number in numbers:
                return row.workspace_id
        return None
