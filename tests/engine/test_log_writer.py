from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from momently.domain.event import BatchDefaults, Event, normalize
from momently.services import Services
from momently.settings import Settings
from momently.store.events import UnknownWorkspace


def make(services: Services, mid: str, user: str = "u") -> Event:
    ev = normalize(
        {"type": "track", "userId": user, "event": "E", "messageId": mid},
        default_type=None,
        defaults=BatchDefaults(),
        received_at=services.clock.now(),
    )
    assert isinstance(ev, Event)
    return ev


@pytest.fixture
def started(services: Services) -> Iterator[Services]:
    services.workspaces.create("w", name=None, now=services.clock.now())
    services.writer.start()
    return services


def test_concurrent_requests_share_commits_and_get_dense_sequences(started: Services) -> None:
    s = started
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(
            pool.map(
                lambda i: s.writer.append_blocking("w", [make(s, f"m{i}-{j}") for j in range(10)]), range(200)
            )
        )
    assert sum(o.stored for o in outcomes) == 2000
    assert s.writer.commits < 200, "requests that arrive together should share a commit"
    seqs = [e.seq for e in s.events.read("w", after_seq=0, limit=5000)]
    assert seqs == list(range(1, 2001))


def test_duplicates_inside_a_group_are_cut_out_of_the_rows_and_the_rest_keep_their_order(
    started: Services,
) -> None:
    """Requests of one group are appended in one transaction; a request with some duplicates
    (seen before, or earlier in the same group) has just those rows removed, and each kept
    row still gets its own body."""
    s = started
    s.workspaces.create("v", name=None, now=s.clock.now())
    assert s.writer.append_blocking("w", [make(s, "old")]).stored == 1
    requests = [
        ("w", [make(s, "a", "first"), make(s, "old"), make(s, "b"), make(s, "a", "again")]),
        ("v", [make(s, "a", "other workspace")]),
        ("w", [make(s, "b"), make(s, "c")]),
    ]
    futures = [s.writer.submit(ws, evs) for ws, evs in requests]
    outcomes = [(f.result().stored, f.result().duplicates) for f in futures]
    # requests may share a commit or not: the outcome is the same
    assert outcomes == [(2, 2), (1, 0), (1, 1)]
    stored = s.events.read("w", after_seq=0, limit=10)
    assert [(e.seq, e.body["messageId"], e.user_id) for e in stored] == [
        (1, "old", "u"),
        (2, "a", "first"),
        (3, "b", "u"),
        (4, "c", "u"),
    ]
    assert [(e.seq, e.user_id) for e in s.events.read("v", after_seq=0, limit=10)] == [(1, "other workspace")]
    assert all(e.body["userId"] == e.user_id for e in stored)


def test_window_survives_a_restart(started: Services, settings: Settings) -> None:
    s = started
    assert s.writer.append_blocking("w", [make(s, "a"), make(s, "b")]).stored == 2
    s.close()
    again = Services.build(settings)
    again.writer.start()
    try:
        outcome = again.writer.append_blocking("w", [make(again, "a"), make(again, "c")])
        assert (outcome.stored, outcome.duplicates) == (1, 1)
    finally:
        again.close()


def test_failed_commit_fails_the_waiting_requests_and_stores_nothing(started: Services) -> None:
    s = started
    future = s.writer.submit("no-such-workspace", [make(s, "x")])
    with pytest.raises(UnknownWorkspace):
        future.result()
    # the id was not remembered: the same message can still be stored once the cause is fixed
    assert s.writer.append_blocking("w", [make(s, "x")]).stored == 1


def test_two_writers_on_one_database_still_store_once(started: Services, settings: Settings) -> None:
    """Two API processes (--workers 2, or several nodes on PostgreSQL) share the log; a
    message id already appended by one is a duplicate for the other, even after a retry."""
    other = Services.build(settings)
    other.writer.start()
    try:
        first = started.writer.append_blocking("w", [make(started, "same"), make(started, "a")])
        second = other.writer.append_blocking("w", [make(other, "same"), make(other, "b")])
        third = started.writer.append_blocking("w", [make(started, "b")])
        assert (first.stored, second.stored, second.duplicates) == (2, 1, 1)
        assert (third.stored, third.duplicates) == (0, 1)
        assert started.events.count("w") == 3
    finally:
        other.close()


def test_racing_writers_store_each_id_once(started: Services, settings: Settings) -> None:
    others = [Services.build(settings) for _ in range(2)]
    writers = [started.writer] + [o.writer for o in others]
    for o in others:
        o.writer.start()
    try:
        with ThreadPoolExecutor(12) as pool:
            outcomes = list(
                pool.map(
                    lambda i: writers[i % 3].append_blocking(
                        "w", [make(started, f"id-{j}") for j in range(i % 7, 60, 3)]
                    ),
                    range(60),
                )
            )
        assert sum(o.stored for o in outcomes) == 60
        assert started.events.count("w") == 60
    finally:
        for o in others:
            o.close()
