"""The consent-aligned personalisation rate, computed from the log and the consent ledger.

The dispatcher only personalises with consent, so the rate is 100% by construction; this
checks it independently: for every ``Message Sent`` that says ``personalised: true``, the
ledger as it stood at that moment (records up to the send's time) must allow personalisation
on that channel. It uses the workspace's current policy (policies are not versioned).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from momently.domain import consent
from momently.services import Services

PAGE = 5000
CHUNK = 500


@dataclass
class Alignment:
    sent: int = 0
    personalised: int = 0
    aligned: int = 0
    unmarked: int = 0  # sends from before the property existed
    misaligned: list[str] = field(default_factory=list)  # delivery keys, the first few

    @property
    def rate(self) -> float | None:
        return self.aligned / self.personalised if self.personalised else None

    def as_json(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "personalised": self.personalised,
            "aligned": self.aligned,
            "rate": self.rate,
            "unmarked": self.unmarked,
            "misaligned": self.misaligned,
        }


@dataclass(frozen=True, slots=True)
class Send:
    """One ``Message Sent``, as much of it as the check reads."""

    user_id: str | None
    anonymous_id: str | None
    time_ms: int
    channel: str
    personalised: bool | None
    person_id: str | None = None
    """when known (a report has it from the delivery), the ledger is read for many people at once"""


def aligned(s: Services, workspace_id: str, sends: Sequence[Send]) -> list[bool]:
    """For each personalised send, whether the ledger as it stood at that moment allowed
    personalisation on its channel (False for sends that were not personalised). The ledger
    is read once per person."""
    policy = s.consent.policy(workspace_id)
    people: dict[tuple[str | None, str | None], list[consent.Record]] = {}
    by_person = _records_by_person(s, workspace_id, {x.person_id for x in sends if x.person_id})
    out: list[bool] = []
    for send in sends:
        if send.personalised is not True:
            out.append(False)
            continue
        if send.person_id is not None and send.person_id in by_person:
            records = by_person[send.person_id]
        else:
            who = (send.user_id, send.anonymous_id)
            if who not in people:
                # every id the person was known by (and their phone), as the dispatcher saw them
                people[who] = s.consent.of_person(
                    workspace_id, s.profiles, user_id=who[0], anonymous_id=who[1]
                )
            records = people[who]
        theirs = [r for r in records if r.grant.at_ms <= send.time_ms]
        out.append(
            consent.check(theirs, send.channel, "personalisation", policy, now_ms=send.time_ms).allowed
        )
    return out


def _records_by_person(
    s: Services, workspace_id: str, person_ids: set[str]
) -> dict[str, list[consent.Record]]:
    """The ledger records of many people, as the dispatcher reads them: their profiles, then
    one pair of queries per chunk of people."""
    out: dict[str, list[consent.Record]] = {}
    ids = sorted(person_ids)
    for i in range(0, len(ids), CHUNK):
        with s.db.read() as conn:
            loaded = s.profiles.load(conn, workspace_id, set(ids[i : i + CHUNK]))
            out.update(s.consent.for_profiles(conn, workspace_id, loaded.values()))
    return out


def personalisation_alignment(s: Services, workspace_id: str, *, since_ms: int = 0) -> Alignment:
    out = Alignment()
    policy = s.consent.policy(workspace_id)
    after = 0
    while True:
        page = s.events.read(workspace_id, after_seq=after, limit=PAGE)
        if not page:
            return out
        after = page[-1].seq
        sends = [e for e in page if e.name == "Message Sent" and e.time_ms >= since_ms]
        if not sends:
            continue
        people: dict[tuple[str | None, str | None], list[consent.Record]] = {}
        for who in {(e.user_id, e.anonymous_id) for e in sends}:
            # every id the person was known by (and their phone), as the dispatcher saw them
            people[who] = s.consent.of_person(workspace_id, s.profiles, user_id=who[0], anonymous_id=who[1])
        for e in sends:
            out.sent += 1
            props = e.body.get("properties") or {}
            if "personalised" not in props:
                out.unmarked += 1
                continue
            if props["personalised"] is not True:
                continue
            out.personalised += 1
            theirs = [r for r in people[(e.user_id, e.anonymous_id)] if r.grant.at_ms <= e.time_ms]
            channel = str(props.get("channel"))
            if consent.check(theirs, channel, "personalisation", policy, now_ms=e.time_ms).allowed:
                out.aligned += 1
            elif len(out.misaligned) < 20:
                out.misaligned.append(str(props.get("delivery_key")))
