"""Consent: what a person agreed to, derived from an append-only ledger.

A record grants or revokes one purpose on one channel (either may be ``*``, "all"), from a
source (``api``, ``identify``, ``unsubscribe_link``, ``sms_stop``, ``stop_contact``, …),
optionally until an expiry. The latest record that covers a (channel, purpose) decides; an
expired grant counts as no record at all. Whether "no record" means yes depends on the
workspace policy: marketing by email and SMS needs an explicit opt-in by default,
transactional messages do not (a revoke still stops them).

Records are chained: each one's MAC (HMAC-SHA256 under the ledger key, which is kept outside
the database) covers its content and the previous record's MAC in the same workspace, so an
edited, inserted or deleted row breaks the chain at that point (:func:`verify_chain`), and
someone who can write to the database but lacks the key cannot recompute it. A record whose
own MAC does not hold is never obeyed: :func:`check` answers ``consent_unverified`` (no
message of any purpose) for a person with such a record. Records from before the ledger was
keyed carry a plain SHA-256 (``chain`` None) and are treated the same way until re-chained
(``momently consent rekey``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

PURPOSES = ("transactional", "marketing", "personalisation")
CHANNELS = ("email", "sms", "push", "in_app", "webhook", "console")
SOURCES = (
    "api",
    "cli",
    "identify",
    "import",
    "dashboard",
    "unsubscribe_link",
    "sms_stop",
    "sms_start",
    "stop_contact",
    "erasure",
)
STOP_SOURCES = frozenset({"stop_contact", "sms_stop"})
ANY = "*"
GENESIS = "0" * 64
KEYED = "hmac1"  # the chain scheme of records MACed with the ledger key

Reason = Literal["no_consent", "consent_expired", "consent_revoked", "stop_contact", "consent_unverified"]


class ConsentError(ValueError):
    """A record that cannot be written: the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What someone asks to record, before it gets its place in the chain."""

    user_id: str | None
    anonymous_id: str | None
    channel: str
    purpose: str
    granted: bool
    source: str
    at_ms: int
    expires_ms: int | None = None
    note: str | None = None
    ref: str | None = None  # what caused it: an event, a delivery, a provider message id
    key_id: int | None = None  # the ingest key or admin token that wrote it (None: CLI, system)

    def check(self) -> None:
        if not self.user_id and not self.anonymous_id:
            raise ConsentError("userId or anonymousId is required")
        if self.channel != ANY and self.channel not in CHANNELS:
            raise ConsentError(f"unknown channel {self.channel!r}: one of {', '.join(CHANNELS)} or *")
        if self.purpose != ANY and self.purpose not in PURPOSES:
            raise ConsentError(f"unknown purpose {self.purpose!r}: one of {', '.join(PURPOSES)} or *")
        if self.source not in SOURCES:
            raise ConsentError(f"unknown source {self.source!r}: one of {', '.join(SOURCES)}")
        if self.expires_ms is not None and (not self.granted or self.expires_ms <= self.at_ms):
            raise ConsentError("only a grant can expire, and only after it was given")

    def content(self) -> dict[str, Any]:
        """The fields the MAC covers (everything but the row's storage details). ``key`` only
        when set, so records written before keys were named keep their old hash."""
        out: dict[str, Any] = {
            "userId": self.user_id,
            "anonymousId": self.anonymous_id,
            "channel": self.channel,
            "purpose": self.purpose,
            "granted": self.granted,
            "source": self.source,
            "at": self.at_ms,
            "expires": self.expires_ms,
            "note": self.note,
            "ref": self.ref,
        }
        if self.key_id is not None:
            out["key"] = self.key_id
        return out


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    grant: Grant
    prev_hash: str
    hash: str
    chain: str | None = KEYED  # None: an unkeyed record from before the ledger had a key
    verified: bool = True  # set by the read side: the record's own MAC holds under the key


def _payload(prev_hash: str, seq: int, workspace_id: str, grant: Grant) -> bytes:
    return orjson.dumps(
        {"prev": prev_hash, "seq": seq, "workspace": workspace_id, **grant.content()},
        option=orjson.OPT_SORT_KEYS,
    )


def chain_hash(prev_hash: str, seq: int, workspace_id: str, grant: Grant) -> str:
    """The unkeyed hash of records written before the ledger was keyed: kept to check such
    a chain once, before ``momently consent rekey`` re-chains it."""
    return hashlib.sha256(_payload(prev_hash, seq, workspace_id, grant)).hexdigest()


def chain_mac(key: bytes, prev_hash: str, seq: int, workspace_id: str, grant: Grant) -> str:
    return hmac.new(key, _payload(prev_hash, seq, workspace_id, grant), hashlib.sha256).hexdigest()


def mac_holds(key: bytes, workspace_id: str, record: Record) -> bool:
    """Whether a record is what the holder of the ledger key wrote (its content and its link
    to the previous record); an unkeyed record never is."""
    if record.chain != KEYED:
        return False
    expected = chain_mac(key, record.prev_hash, record.seq, workspace_id, record.grant)
    return hmac.compare_digest(expected.encode(), record.hash.encode())


@dataclass(frozen=True, slots=True)
class Break:
    seq: int
    problem: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    records: int
    breaks: list[Break]

    @property
    def ok(self) -> bool:
        return not self.breaks


def verify_chain(
    workspace_id: str, records: Iterable[Record], key: bytes | None = None, *, unkeyed_ok: bool = False
) -> ChainReport:
    """Every place the stored chain disagrees with itself: a changed row (its MAC no longer
    matches), a deleted or inserted row (the next row's ``prev_hash`` or seq does not follow).
    Reads the records once, in order, so a long chain streams through. Without ``key`` it
    checks an unkeyed chain (the records from before the ledger was keyed); with one, every
    record must be keyed, unless ``unkeyed_ok`` (before a rekey: old records, then new)."""
    breaks: list[Break] = []
    prev, expected_seq, n = GENESIS, 1, 0
    for r in records:
        n += 1
        if r.seq != expected_seq:
            breaks.append(Break(r.seq, f"expected record {expected_seq}: rows are missing"))
        if r.prev_hash != prev:
            breaks.append(Break(r.seq, "prev_hash does not match the record before it"))
        if key is None or (unkeyed_ok and r.chain != KEYED):
            if chain_hash(r.prev_hash, r.seq, workspace_id, r.grant) != r.hash:
                breaks.append(Break(r.seq, "content does not match its hash: the row was edited"))
        elif r.chain != KEYED:
            breaks.append(Break(r.seq, "record is not keyed: run `momently consent rekey`"))
        elif not mac_holds(key, workspace_id, r):
            breaks.append(Break(r.seq, "content does not match its hash: the row was edited"))
        prev, expected_seq = r.hash, r.seq + 1
    return ChainReport(n, breaks)


# policy ---------------------------------------------------------------------------------
# Push is absent on purpose: a push subscription exists only after the person allowed
# notifications in the browser's own permission prompt, which is the opt-in.
DEFAULT_OPT_IN: Mapping[str, tuple[str, ...]] = {
    "marketing": ("email", "sms"),
    "personalisation": (),
    "transactional": (),
}
DEFAULT_TRAITS: Mapping[str, tuple[str, str]] = {
    "email_opt_in": ("email", "marketing"),
    "sms_opt_in": ("sms", "marketing"),
    "push_opt_in": ("push", "marketing"),
    "personalisation_opt_in": (ANY, "personalisation"),
}


@dataclass(frozen=True, slots=True)
class Policy:
    """Per workspace: which (purpose, channel) pairs need an explicit grant, and which identify
    traits are consent (``email_opt_in: true`` grants email marketing, ``false`` revokes it)."""

    opt_in: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_OPT_IN))
    traits: Mapping[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_TRAITS))

    def needs_opt_in(self, channel: str, purpose: str) -> bool:
        wanted = self.opt_in.get(purpose, ())
        return ANY in wanted or channel in wanted

    def as_json(self) -> dict[str, Any]:
        return {
            "optIn": {p: list(c) for p, c in self.opt_in.items()},
            "traits": {t: {"channel": c, "purpose": p} for t, (c, p) in self.traits.items()},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Policy:
        """Parse and check a policy document. A purpose missing from ``optIn`` keeps its
        default; ``traits``, when given, is the whole mapping."""
        opt_in: dict[str, tuple[str, ...]] = dict(DEFAULT_OPT_IN)
        raw_opt = doc.get("optIn", {})
        if not isinstance(raw_opt, dict):
            raise ConsentError("optIn must map a purpose to a list of channels")
        for purpose, channels in raw_opt.items():
            if purpose not in PURPOSES:
                raise ConsentError(f"optIn: unknown purpose {purpose!r}: one of {', '.join(PURPOSES)}")
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise ConsentError(f"optIn.{purpose} must be a list of channels")
            for c in channels:
                if c != ANY and c not in CHANNELS:
                    raise ConsentError(f"optIn.{purpose}: unknown channel {c!r}")
            opt_in[purpose] = tuple(channels)
        # a traits map replaces the default one whole (so a trait can be left out)
        traits: dict[str, tuple[str, str]] = {} if "traits" in doc else dict(DEFAULT_TRAITS)
        raw_traits = doc.get("traits", {})
        if not isinstance(raw_traits, dict):
            raise ConsentError("traits must map a trait name to {channel, purpose}")
        for trait, target in raw_traits.items():
            if target is None:
                traits.pop(trait, None)
                continue
            if not isinstance(target, dict):
                raise ConsentError(f"traits.{trait} must be {{channel, purpose}} or null")
            probe = Grant("x", None, str(target.get("channel")), str(target.get("purpose")), True, "api", 0)
            probe.check()
            traits[trait] = (probe.channel, probe.purpose)
        return cls(opt_in, traits)


# deciding ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: Reason | None = None
    seq: int | None = None  # the record that decided, when one did


def _covers(g: Grant, channel: str, purpose: str) -> bool:
    return g.channel in (channel, ANY) and g.purpose in (purpose, ANY)


def current(records: Sequence[Record], channel: str, purpose: str) -> Record | None:
    """The latest record covering this channel and purpose (records are in ledger order)."""
    for r in reversed(records):
        if _covers(r.grant, channel, purpose):
            return r
    return None


def check(records: Sequence[Record], channel: str, purpose: str, policy: Policy, *, now_ms: int) -> Verdict:
    """May a message for ``purpose`` go to this person on ``channel`` now? Never while one of
    the person's records failed verification: what it said cannot be known, so nothing is
    assumed (fail closed) until an operator looks (``momently consent verify``)."""
    for r in records:
        if not r.verified:
            return Verdict(False, "consent_unverified", r.seq)
    latest = current(records, channel, purpose)
    required = policy.needs_opt_in(channel, purpose)
    if latest is None:
        return Verdict(False, "no_consent") if required else Verdict(True)
    g = latest.grant
    if not g.granted:
        return Verdict(False, "stop_contact" if g.source in STOP_SOURCES else "consent_revoked", latest.seq)
    if g.expires_ms is not None and g.expires_ms <= now_ms:
        return Verdict(False, "consent_expired", latest.seq) if required else Verdict(True, None, latest.seq)
    return Verdict(True, None, latest.seq)


def trait_grants(
    traits: Mapping[str, Any],
    policy: Policy,
    records: Sequence[Record],
    *,
    user_id: str | None,
    anonymous_id: str | None,
    at_ms: int,
    now_ms: int,
    ref: str | None = None,
    key_id: int | None = None,
) -> list[Grant]:
    """The records an identify call's consent traits add: only changes, so re-sending the
    same traits (every SDK does on each identify) does not grow the ledger, and replaying
    the log or a late identify never overrides what was recorded after it. A trait never
    lifts a stop (an SMS STOP, a stop-contact): ``sms_opt_in: true`` sent by the app after the
    handset said STOP grants nothing until the handset says START (or an operator grants)."""
    out: list[Grant] = []
    for trait, (channel, purpose) in policy.traits.items():
        value = traits.get(trait)
        if not isinstance(value, bool):
            continue
        if ref is not None and any(r.grant.ref == ref for r in records):
            continue  # this event was recorded already: a replay of the log
        latest = current(records, channel, purpose)
        if latest is not None and latest.grant.at_ms > at_ms:
            continue  # a late identify does not override newer news
        if value and latest is not None and not latest.grant.granted and latest.grant.source in STOP_SOURCES:
            continue  # a STOP is lifted by the person (START) or an operator, never by an app's trait
        live = (
            latest is not None
            and latest.grant.granted
            and (latest.grant.expires_ms is None or latest.grant.expires_ms > now_ms)
        )
        if latest is not None and live == value:
            continue
        if latest is None and not value and policy.needs_opt_in(channel, purpose):
            continue  # nothing was granted, and nothing is assumed
        out.append(
            Grant(
                user_id,
                anonymous_id,
                channel,
                purpose,
                value,
                "identify",
                at_ms,
                note=trait,
                ref=ref,
                key_id=key_id,
            )
        )
    return out


def stop_contact(
    user_id: str | None,
    anonymous_id: str | None,
    *,
    at_ms: int,
    source: str = "stop_contact",
    include_transactional: bool = False,
    channel: str = ANY,
    note: str | None = None,
    ref: str | None = None,
    key_id: int | None = None,
) -> list[Grant]:
    """One call that revokes everything on ``channel`` but transactional messages (or those
    too, by flag)."""
    purposes = PURPOSES if include_transactional else tuple(p for p in PURPOSES if p != "transactional")
    return [
        Grant(user_id, anonymous_id, channel, p, False, source, at_ms, note=note, ref=ref, key_id=key_id)
        for p in purposes
    ]


def purpose_of(tier: str) -> str:
    """Tier A flows are transactional (an ETA, a receipt); B and C are marketing."""
    return "transactional" if tier == "A" else "marketing"
