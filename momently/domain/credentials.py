"""Write keys (public and server) and admin tokens: random, shown once, stored only as a SHA-256 digest.

A plain digest (not a slow password hash) is right here because the secrets are 192-bit
random values, not human-chosen passwords: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum


class KeyKind(StrEnum):
    # the public write key: sends events from browsers and apps; it is in every page, so it is
    # trusted only for what a visitor may say about themselves (see domain.trust)
    WRITE = "write"
    SERVER = "server"  # secret write key for the customer's backend: full ingest rights
    ADMIN = "admin"  # reads profiles and manages the workspace; keep server-side


INGEST_KINDS = (KeyKind.WRITE, KeyKind.SERVER)
_PREFIX = {KeyKind.WRITE: "wk_", KeyKind.SERVER: "sk_", KeyKind.ADMIN: "mat_"}


def new_secret(kind: KeyKind) -> str:
    return _PREFIX[kind] + secrets.token_urlsafe(24)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """Enough of a key to recognise it in a listing, not enough to use it."""
    return secret[: len(secret.split("_", 1)[0]) + 5]
