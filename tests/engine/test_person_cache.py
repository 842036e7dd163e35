"""The engine keeps the people it just committed in memory (``engine.person_cache``); these
pin that the copy is never trusted once someone else could have written those rows, on
SQLite and PostgreSQL, and that its size never changes a result."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from momently import catalog
from momently.domain.definitions import load
from momently.domain.timestamps import to_millis
from momently.engine.profile_projector import ProfileProjector
from momently.services import Services
from tests.engine.test_flow_idempotency import FLOWS
from tests.engine.test_profile_projector import STORY, append, profiles_of


def _traits(s: Services, user: str) -> dict[str, Any] | None:
    person = s.profiles.person_for("w", ("user", user))
    profile = s.profiles.get("w", person) if person else None
    return None if profile is None else dict(profile.traits)


def test_a_change_by_another_engine_is_not_overwritten_from_the_cache(services: Services) -> None:
    s = services
    s.workspaces.create("w", name=None, now=s.clock.now())
    a = ProfileProjector(s.db, s.events, s.profiles)
    b = ProfileProjector(s.db, s.events, s.profiles)
    append(s, [{"type": "identify", "userId": "ada", "traits": {"plan": "free"}}])
    a.run_until_idle()  # a now holds ada
    append(s, [{"type": "identify", "userId": "ada", "traits": {"plan": "pro"}}])
    b.run_until_idle()  # b moves her on
    append(s, [{"type": "track", "userId": "ada", "event": "Tick"}])
    a.run_until_idle()  # a must read her again, not write its copy back
    assert _traits(s, "ada") == {"plan": "pro"}
    assert profiles_of(s)["ada"]["eventCounts"] == {"Tick": 1}


def test_an_erased_person_does_not_come_back_from_the_cache(services: Services) -> None:
    s = services
    s.workspaces.create("w", name=None, now=s.clock.now())
    append(s, [{"type": "identify", "userId": "ada", "traits": {"email": "ada@x.io", "plan": "pro"}}])
    s.projector.run_until_idle()
    person = s.profiles.person_for("w", ("user", "ada"))
    assert person is not None
    assert s.people.erase("w", person, now_ms=to_millis(s.clock.now())) is not None
    # she comes back with consent (which lifts the tombstone): as a new person, nothing old
    append(s, [{"type": "identify", "userId": "ada", "traits": {"email_opt_in": True}}])
    s.projector.run_until_idle()
    assert _traits(s, "ada") == {"email_opt_in": True}
    again = s.profiles.person_for("w", ("user", "ada"))
    assert again is not None
    profile = s.profiles.get("w", again)
    assert profile is not None
    assert profile.email is None


def test_a_replay_starts_from_an_empty_cache(services: Services) -> None:
    s = services
    s.workspaces.create("w", name=None, now=s.clock.now())
    append(s, STORY)
    s.projector.run_until_idle()
    before = profiles_of(s)
    assert s.projector.replay("w") == len(STORY)
    assert profiles_of(s) == before  # counts not doubled by a copy kept from the first pass


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_size=st.integers(1, 4), capacity=st.integers(0, 3))
def test_the_cache_size_never_changes_the_profiles(
    services: Services, batch_size: int, capacity: int
) -> None:
    s = services
    if s.workspaces.get("w") is None:
        s.workspaces.create("w", name=None, now=s.clock.now())
        append(s, STORY)
    uncached = ProfileProjector(s.db, s.events, s.profiles, cache_people=0)
    uncached.replay("w")
    expected = profiles_of(s)
    small = ProfileProjector(s.db, s.events, s.profiles, batch_size=batch_size, cache_people=capacity)
    small.replay("w")
    assert profiles_of(s) == expected
    with s.db.read() as conn:
        epoch = s.profiles.epoch(conn, "w")
    kept = small.cache.open("w", epoch)  # the same object while nobody else wrote
    assert len(kept.people) <= capacity


def test_another_process_starting_a_replay_makes_the_cache_stale(services: Services) -> None:
    s = services
    s.workspaces.create("w", name=None, now=s.clock.now())
    append(s, STORY)
    s.projector.run_until_idle()
    before = profiles_of(s)
    with s.db.write() as conn:  # what `momently replay` in another process does first
        s.profiles.reset(conn, "w", "profiles")
        s.engine_state.reset(conn, "w")
    s.projector.run_until_idle()
    assert profiles_of(s) == before


def test_a_failed_batch_leaves_nothing_of_itself_in_the_cache(services: Services) -> None:
    s = services
    s.workspaces.create("w", name=None, now=s.clock.now())
    docs, problems = load(FLOWS, "flows.yaml")  # a segment and a flow on entering it
    assert not problems
    catalog.apply(s, "w", catalog.Loaded(docs, []))
    append(s, [{"type": "track", "userId": "ann", "event": "App Opened"}])
    s.projector.run_until_idle()  # ann is cached, in no segment
    original = s.engine_state.save
    calls = {"n": 0}

    def failing_once(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        original(*args, **kwargs)
        if calls["n"] == 1:
            raise RuntimeError("disk full")  # after the batch changed its people, before commit

    s.engine_state.save = failing_once  # type: ignore[method-assign]
    append(s, [{"type": "track", "userId": "ann", "event": "Order Completed"}])
    with pytest.raises(RuntimeError):
        s.projector.run_until_idle()
    s.projector.run_until_idle()
    assert [e.flow_id for e in s.engine_state.enrollments("w")] == ["buyer-welcome"]
    assert [p for p, _ in s.engine_state.segment_members("w", "buyers", limit=10)] == [
        s.profiles.person_for("w", ("user", "ann"))
    ]


def test_an_engine_batch_takes_the_cursor_row_before_the_epoch_row(
    database_url: str, services: Services
) -> None:
    """Erasure locks the cursor row, then moves the epoch; on PostgreSQL both row locks are
    held to commit, so an engine batch must take them in the same order or the two deadlock.
    Holding the cursor row as an erasure does, the epoch row must stay free while a batch
    waits."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL only (a SQLite write transaction is exclusive)")
    s = services
    s.workspaces.create("w", name=None, now=s.clock.now())
    append(s, [{"type": "identify", "userId": "ada", "traits": {"n": 1}}])
    s.projector.run_until_idle()
    append(s, [{"type": "track", "userId": "ada", "event": "Tick"}])
    with s.db.engine.connect() as eraser:
        tx = eraser.begin()
        eraser.execute(
            text("SELECT seq FROM cursors WHERE consumer = 'profiles' AND workspace_id = 'w' FOR UPDATE")
        )
        batch = threading.Thread(target=s.projector.run_until_idle)
        batch.start()
        time.sleep(0.5)  # the batch is now waiting for the cursor row
        eraser.execute(text("SET LOCAL lock_timeout = '2s'"))
        s.profiles.bump_epoch(eraser, "w")  # raises if the waiting batch holds the epoch row
        tx.commit()
    batch.join()
    assert profiles_of(s)["ada"]["eventCounts"] == {"Tick": 1}
