"""The consent ledger and policy tables.

Every record is MACed with the ledger key (kept outside the database, see
``store.ledger_key``) as it is written, and checked as it is read: a record whose MAC does not
hold comes back with ``verified=False`` (and is logged), which ``domain.consent.check`` turns
into no consent at all for that person.

Appends to one workspace's chain are serialized (SQLite has one writer; on PostgreSQL a
transaction-scoped advisory lock per workspace), so two concurrent appends cannot both
link to the same previous record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, text, update

from momently.domain.consent import (
    GENESIS,
    KEYED,
    ChainReport,
    Grant,
    Policy,
    Record,
    chain_mac,
    mac_holds,
    verify_chain,
)
from momently.domain.profile import Profile
from momently.store.database import Database
from momently.store.policies import PolicyTable
from momently.store.profiles import ProfileStore
from momently.store.schema import consent_policies, consent_records

log = logging.getLogger(__name__)

_CHUNK = 500
# the dispatcher reads a batch's records before every send: built once
_BY_USER, _BY_ANON = (
    select(consent_records).where(
        consent_records.c.workspace_id == bindparam("ws"), column.in_(bindparam("ids", expanding=True))
    )
    for column in (consent_records.c.user_id, consent_records.c.anonymous_id)
)


class ConsentLedger:
    def __init__(self, db: Database, key: bytes, *, policy_cache_seconds: float = 5.0) -> None:
        self.db = db
        self.key = key
        self._policies = PolicyTable(
            db, consent_policies, Policy.from_json, Policy, cache_seconds=policy_cache_seconds
        )

    # writing ------------------------------------------------------------------------------
    def append(self, conn: Connection, workspace_id: str, grants: Sequence[Grant]) -> list[Record]:
        """Chain and store ``grants`` inside the caller's transaction."""
        if not grants:
            return []
        for g in grants:
            g.check()
        if self.db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"consent:{workspace_id}"})
        last = conn.execute(
            select(consent_records.c.seq, consent_records.c.hash)
            .where(consent_records.c.workspace_id == workspace_id)
            .order_by(consent_records.c.seq.desc())
            .limit(1)
        ).first()
        seq, prev = (int(last[0]), str(last[1])) if last else (0, GENESIS)
        out: list[Record] = []
        for g in grants:
            seq += 1
            h = chain_mac(self.key, prev, seq, workspace_id, g)
            out.append(Record(seq, g, prev, h))
            prev = h
        conn.execute(
            consent_records.insert(),
            [
                {
                    "workspace_id": workspace_id,
                    "seq": r.seq,
                    "user_id": r.grant.user_id,
                    "anonymous_id": r.grant.anonymous_id,
                    "channel": r.grant.channel,
                    "purpose": r.grant.purpose,
                    "granted": int(r.grant.granted),
                    "source": r.grant.source,
                    "at_ms": r.grant.at_ms,
                    "expires_ms": r.grant.expires_ms,
                    "note": r.grant.note,
                    "ref": r.grant.ref,
                    "prev_hash": r.prev_hash,
                    "hash": r.hash,
                    "key_id": r.grant.key_id,
                    "chain": KEYED,
                }
                for r in out
            ],
        )
        return out

    def record(self, workspace_id: str, grants: Sequence[Grant]) -> list[Record]:
        with self.db.write() as conn:
            return self.append(conn, workspace_id, grants)

    # reading ------------------------------------------------------------------------------
    def history(
        self, conn: Connection, workspace_id: str, *, user_ids: Iterable[str], anonymous_ids: Iterable[str]
    ) -> list[Record]:
        """Every record filed under any of these ids, in ledger order."""
        users, anons = sorted(set(user_ids)), sorted(set(anonymous_ids))
        if not users and not anons:
            return []
        found: dict[int, Record] = {}
        for stmt, values in ((_BY_USER, users), (_BY_ANON, anons)):
            for i in range(0, len(values), _CHUNK):
                rows = conn.execute(stmt, {"ws": workspace_id, "ids": values[i : i + _CHUNK]}).all()
                for r in rows:
                    rec = self._checked(workspace_id, _record(r._mapping))
                    found[rec.seq] = rec
        return [found[s] for s in sorted(found)]

    def of_person(
        self, workspace_id: str, profiles: ProfileStore, *, user_id: str | None, anonymous_id: str | None
    ) -> list[Record]:
        """Records under the given ids plus every anonymousId the person's profile links."""
        users, anons = [user_id] if user_id else [], [anonymous_id] if anonymous_id else []
        for kind, value in (("user", user_id), ("anon", anonymous_id)):
            person = profiles.person_for(workspace_id, (kind, value)) if value else None
            profile = profiles.get(workspace_id, person) if person else None
            if profile is not None:
                users += [profile.user_id] if profile.user_id else []
                anons += _keys(profile)
        with self.db.read() as conn:
            return self.history(conn, workspace_id, user_ids=users, anonymous_ids=anons)

    def for_profiles(
        self, conn: Connection, workspace_id: str, people: Iterable[Profile]
    ) -> dict[str, list[Record]]:
        """Each person's records, from one pair of queries for the whole batch."""
        people = list(people)
        records = self.history(
            conn,
            workspace_id,
            user_ids=[p.user_id for p in people if p.user_id],
            anonymous_ids=[a for p in people for a in _keys(p)],
        )
        out: dict[str, list[Record]] = {}
        for p in people:
            anons = set(_keys(p))
            out[p.person_id] = [
                r
                for r in records
                if (p.user_id is not None and r.grant.user_id == p.user_id) or r.grant.anonymous_id in anons
            ]
        return out

    def chain(self, workspace_id: str, *, page: int = 5000) -> Iterator[Record]:
        """The whole chain in order, a page at a time (for ``momently consent verify``)."""
        after = 0
        while True:
            with self.db.read() as conn:
                rows = conn.execute(
                    select(consent_records)
                    .where(consent_records.c.workspace_id == workspace_id, consent_records.c.seq > after)
                    .order_by(consent_records.c.seq)
                    .limit(page)
                ).all()
            if not rows:
                return
            for r in rows:
                rec = _record(r._mapping)
                after = rec.seq
                yield rec

    def _checked(self, workspace_id: str, record: Record) -> Record:
        if mac_holds(self.key, workspace_id, record):
            return record
        log.error(
            "consent record %s/%d does not verify under the ledger key (%s): not obeyed",
            workspace_id,
            record.seq,
            "unkeyed: run `momently consent rekey`" if record.chain != KEYED else "edited",
        )
        return Record(record.seq, record.grant, record.prev_hash, record.hash, record.chain, verified=False)

    def verify(self, workspace_id: str) -> ChainReport:
        """The whole chain checked under the ledger key (``momently consent verify``)."""
        return verify_chain(workspace_id, self.chain(workspace_id), self.key)

    def head(self, workspace_id: str) -> tuple[int, str]:
        """The latest record's seq and MAC (0 and the genesis value for an empty ledger).
        Kept somewhere the database's writers cannot reach (a log, a ticket, a notary), it
        shows later that no record up to it was removed or rewritten, even by someone who
        had the key."""
        with self.db.read() as conn:
            last = conn.execute(
                select(consent_records.c.seq, consent_records.c.hash)
                .where(consent_records.c.workspace_id == workspace_id)
                .order_by(consent_records.c.seq.desc())
                .limit(1)
            ).first()
        return (int(last[0]), str(last[1])) if last else (0, GENESIS)

    def rekey(self, workspace_id: str, *, accept_breaks: bool = False) -> ChainReport:
        """Re-chain the workspace's ledger under the ledger key: for records from before it was
        keyed, or after the key was replaced. First checks the chain as it stands (unkeyed,
        or keyed with the current key); a broken chain is left alone unless ``accept_breaks``
        (the operator vouches for the rows as they are). Returns that check's report."""
        records = list(self.chain(workspace_id))
        report = verify_chain(workspace_id, records, self.key, unkeyed_ok=True)
        if not report.ok and not accept_breaks:
            return report
        with self.db.write() as conn:
            if self.db.dialect == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"consent:{workspace_id}"}
                )
            prev = GENESIS
            for r in records:
                mac = chain_mac(self.key, prev, r.seq, workspace_id, r.grant)
                conn.execute(
                    update(consent_records)
                    .where(consent_records.c.workspace_id == workspace_id, consent_records.c.seq == r.seq)
                    .values(prev_hash=prev, hash=mac, chain=KEYED)
                )
                prev = mac
        return report

    def adopt_unkeyed(self) -> dict[str, ChainReport]:
        """Re-chain, under the ledger key, every workspace's records from before the ledger was
        keyed, when their old chain is intact. Called once, by the start that upgrades the
        schema across the keyed ledger, so an upgrade does not stop every message; never
        later, so unkeyed rows that appear afterwards (written by someone without the key)
        are not blessed. A workspace whose old chain is broken is left for the operator
        (``momently consent rekey --accept-breaks`` after looking) and logged."""
        with self.db.read() as conn:
            workspaces = [
                str(w)
                for w in conn.execute(
                    select(consent_records.c.workspace_id).where(consent_records.c.chain.is_(None)).distinct()
                ).scalars()
            ]
        reports: dict[str, ChainReport] = {}
        for workspace_id in workspaces:
            report = self.rekey(workspace_id)
            reports[workspace_id] = report
            if report.ok:
                log.info(
                    "consent ledger of %s re-chained under the ledger key (%d records)",
                    workspace_id,
                    report.records,
                )
            else:
                log.error(
                    "consent ledger of %s has %d break(s) in its records from before the keyed ledger: "
                    "left unkeyed and not obeyed; see `momently consent verify --workspace %s`, then "
                    "`momently consent rekey --accept-breaks`",
                    workspace_id,
                    len(report.breaks),
                    workspace_id,
                )
        return reports

    def count(self, workspace_id: str) -> int:
        with self.db.read() as conn:
            n = conn.execute(
                select(func.count()).where(consent_records.c.workspace_id == workspace_id)
            ).scalar_one()
        return int(n)

    # policy -------------------------------------------------------------------------------
    def policy(self, workspace_id: str) -> Policy:
        return self._policies.get(workspace_id)

    def policy_of(self, body: str | None) -> Policy:
        """The policy stored as ``body`` (as read with the dispatcher's send marks)."""
        return self._policies.of_body(body)

    def set_policy(self, workspace_id: str, doc: dict[str, Any], *, now_ms: int) -> Policy:
        return self._policies.put(workspace_id, Policy.from_json(doc), now_ms=now_ms)


def phone_key(phone: str) -> str:
    """SMS STOP is about a number, and may come from one no profile has yet: such records are
    filed under this key, which every profile with that phone matches."""
    return f"phone:{phone}"


def _keys(p: Profile) -> list[str]:
    return [*p.anonymous_ids, *([phone_key(p.phone)] if p.phone else [])]


def _record(m: Any) -> Record:
    return Record(
        seq=int(m["seq"]),
        grant=Grant(
            user_id=m["user_id"],
            anonymous_id=m["anonymous_id"],
            channel=m["channel"],
            purpose=m["purpose"],
            granted=bool(m["granted"]),
            source=m["source"],
            at_ms=int(m["at_ms"]),
            expires_ms=int(m["expires_ms"]) if m["expires_ms"] is not None else None,
            note=m["note"],
            ref=m["ref"],
            key_id=m.get("key_id"),
        ),
        prev_hash=m["prev_hash"],
        hash=m["hash"],
        chain=m.get("chain"),
    )
