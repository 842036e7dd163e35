from __future__ import annotations

import threading
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from momently.domain.event import BatchDefaults, Event, normalize
from momently.domain.profile import document
from momently.engine.profile_projector import ProfileProjector
from momently.services import Services


def append(s: Services, raws: list[dict[str, Any]]) -> None:
    events = []
    for raw in raws:
        ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=s.clock.now())
        assert isinstance(ev, Event), ev
        events.append(ev)
    with s.db.write() as conn:
        s.events.append(conn, [("w", e) for e in events])


def profiles_of(s: Services) -> dict[str, dict[str, Any]]:
    out = {}
    for ident in ("ada", "bob"):
        person = s.profiles.person_for("w", ("user", ident))
        if person:
            p = s.profiles.get("w", person)
            assert p is not None
            out[ident] = document(p)
    return out


STORY = [
    {"type": "page", "anonymousId": "a1", "name": "Home", "timestamp": "2026-11-01T10:00:00Z"},
    {"type": "track", "anonymousId": "a1", "event": "Product Added", "timestamp": "2026-11-01T10:01:00Z"},
    {"type": "identify", "userId": "ada", "anonymousId": "a1", "traits": {"email": "ada@x.io"}},
    {"type": "track", "anonymousId": "a2", "event": "Product Added"},
    {"type": "alias", "userId": "ada", "previousId": "a2"},
    {"type": "track", "userId": "ada", "event": "Order Completed", "properties": {"revenue": 30}},
    {"type": "identify", "userId": "bob", "anonymousId": "b1", "traits": {"plan": "pro"}},
    {"type": "group", "userId": "bob", "groupId": "team-1"},
]


def test_stitches_anonymous_history_and_replays_identically(services: Services) -> None:
    s = services
    s.workspaces.create("w", name=None, now=s.clock.now())
    append(s, STORY)
    assert s.projector.run_until_idle() == len(STORY)
    before = profiles_of(s)
    ada = before["ada"]
    assert ada["anonymousIds"] == ["a1", "a2"]
    assert ada["eventCounts"] == {"$page": 1, "Product Added": 2, "Order Completed": 1}
    assert ada["firstSeen"] == "2026-11-01T10:00:00.000Z"
    assert ada["computed"]["revenue"] == 30
    assert before["bob"]["groups"] == ["team-1"]
    with s.db.read() as conn:
        assert len(s.profiles.lookup_identities(conn, "w", [("anon", "a2")])) == 1
    person = s.profiles.person_for("w", ("user", "ada"))
    assert person is not None
    assert len(s.profiles.event_seqs("w", person, before_seq=None, limit=100)) == 6

    assert s.projector.replay("w") == len(STORY)
    assert profiles_of(s) == before


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_size=st.integers(1, 9))
def test_any_batch_size_gives_the_same_profiles(services: Services, batch_size: int) -> None:
    s = services
    if s.workspaces.get("w") is None:
        s.workspaces.create("w", name=None, now=s.clock.now())
        append(s, STORY)
    s.projector.replay("w")
    expected = profiles_of(s)
    small = ProfileProjector(s.db, s.events, s.profiles, batch_size=batch_size)
    small.replay("w")
    assert profiles_of(s) == expected


def test_two_projectors_racing_apply_each_event_once(services: Services) -> None:
    s = services
    s.workspaces.create("w", name=None, now=s.clock.now())
    append(s, [{"type": "track", "userId": "ada", "event": "Tick"} for _ in range(300)])
    others = [ProfileProjector(s.db, s.events, s.profiles, batch_size=7) for _ in range(3)]
    threads = [threading.Thread(target=p.run_until_idle) for p in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.projector.run_until_idle()
    assert profiles_of(s)["ada"]["eventCounts"] == {"Tick": 300}
