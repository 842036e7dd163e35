from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from momently.domain.event import BatchDefaults, Event, normalize
from momently.services import Services
from momently.settings import Settings
from momently.store.database import DatabaseError
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


def test_second_writer_on_one_sqlite_file_is_refused(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/one.db"
    first = Services.build(Settings(database_url=url))
    first.writer.start()
    second = Services.build(Settings(database_url=url))
    try:
        with pytest.raises(DatabaseError, match="already writing"):
            second.writer.start()
    finally:
        second.close()
        first.close()


@pytest.mark.postgres
def test_two_api_nodes_on_postgresql_still_store_once(started: Services, settings: Settings) -> None:
    if started.db.dialect != "postgresql":
        pytest.skip("several writer processes are a PostgreSQL deployment")
    other = Services.build(settings)
    other.writer.start()
    try:
        first = started.writer.append_blocking("w", [make(started, "same")])
        second = other.writer.append_blocking("w", [make(other, "same")])
        assert (first.stored, second.stored, second.duplicates) == (1, 0, 1)
        assert started.events.count("w") == 1
    finally:
        other.close()
