"""What the engine knew about recently seen people after its last commit: their profile,
segment memberships, event history and identities, so the next batch need not read them back.

Loading a batch's people cost about a fifth of the engine's time (three indexed reads and a
JSON decode per person; with 100k people nearly every event of a batch is a different one).

It is only ever a copy of committed rows, and only trusted while nobody else can have changed
them. Every writer of those rows moves the workspace's *epoch* (a row in ``cursors``, see
``ProfileStore.bump_epoch``) in its transaction: each engine batch, erasure, a replay's reset.
A batch reads the epoch with its snapshot; the cache is kept only if it is the value the
engine's own last commit left, and after a commit only if that commit moved it by exactly one
(nobody committed in between). A batch that fails, or is recomputed, drops it. The cache
hands its objects to the batch, which changes them in place: either the batch commits and
they are the committed state, or the cache is dropped.

Bounded: the least recently used people are forgotten beyond ``capacity``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from momently.domain.identity import Identity
from momently.domain.profile import Profile


@dataclass(slots=True)
class Person:
    profile: Profile
    members: dict[str, int]  # segment id -> since
    history: dict[str, list[int]]  # event name -> times kept for windowed rules
    identities: set[Identity] = field(default_factory=set)


class WorkspaceCache:
    def __init__(self, epoch: int, capacity: int) -> None:
        self.epoch = epoch
        self.capacity = capacity
        self.people: OrderedDict[str, Person] = OrderedDict()
        self.identities: dict[Identity, str] = {}

    def known(self, wanted: Iterable[Identity]) -> tuple[dict[Identity, str], set[Identity]]:
        """Identities this cache can answer, and the ones to look up."""
        found: dict[Identity, str] = {}
        missing: set[Identity] = set()
        for identity in wanted:
            pid = self.identities.get(identity)
            if pid is None:
                missing.add(identity)
            else:
                found[identity] = pid
        return found, missing

    def take(self, persons: Iterable[str]) -> tuple[dict[str, Person], set[str]]:
        """The cached people among ``persons`` (theirs for the batch to change), and the rest."""
        hits: dict[str, Person] = {}
        missing: set[str] = set()
        for pid in persons:
            person = self.people.get(pid)
            if person is None:
                missing.add(pid)
            else:
                self.people.move_to_end(pid)
                hits[pid] = person
        return hits, missing

    def put(self, pid: str, profile: Profile, members: dict[str, int], history: dict[str, list[int]]) -> None:
        person = self.people.get(pid)
        if person is None:
            self.people[pid] = Person(profile, members, history)
        else:
            person.profile, person.members, person.history = profile, members, history
            self.people.move_to_end(pid)

    def link(self, identities: Mapping[Identity, str]) -> None:
        for identity, pid in identities.items():
            person = self.people.get(pid)
            if person is None:
                continue  # only identities of cached people, so forgetting them forgets these
            previous = self.identities.get(identity)
            if previous is not None and previous != pid and previous in self.people:
                self.people[previous].identities.discard(identity)
            self.identities[identity] = pid
            person.identities.add(identity)

    def forget(self, pid: str) -> None:
        person = self.people.pop(pid, None)
        if person is None:
            return
        for identity in person.identities:
            if self.identities.get(identity) == pid:
                del self.identities[identity]

    def trim(self) -> None:
        while len(self.people) > self.capacity:
            pid = next(iter(self.people))
            self.forget(pid)


class PersonCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._workspaces: dict[str, WorkspaceCache] = {}

    def open(self, workspace_id: str, epoch: int) -> WorkspaceCache:
        """The workspace's cache if ``epoch`` is the one this engine's last commit left;
        otherwise an empty one (somebody else wrote, or this is the first batch)."""
        cache = self._workspaces.get(workspace_id)
        if cache is None or cache.epoch != epoch:
            cache = WorkspaceCache(epoch, self.capacity)
            self._workspaces[workspace_id] = cache
        return cache

    def committed(self, workspace_id: str, cache: WorkspaceCache, *, epoch: int) -> bool:
        """After a commit that moved the epoch to ``epoch``: keep the cache only if nobody
        else moved it since this batch's snapshot. If kept, the caller records the batch's
        people in it."""
        if epoch != cache.epoch + 1 or self._workspaces.get(workspace_id) is not cache:
            self.drop(workspace_id)
            return False
        cache.epoch = epoch
        return True

    def drop(self, workspace_id: str) -> None:
        self._workspaces.pop(workspace_id, None)
