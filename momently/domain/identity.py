"""Identity stitching: which person does an event belong to?

A person is known by identities ``("user", userId)`` and ``("anon", anonymousId)``.
The rules, applied in log order:

- an event with a userId belongs to that user's person. Its anonymousId is linked to the
  same person; if that anonymousId already had an *anonymous* person (browsing before
  login), that person is merged in, so the history before login is kept. An anonymousId
  already tied to a different user is left with that user (shared devices).
- an event with only an anonymousId belongs to that anonymous person.
- ``alias`` (previousId -> userId) merges whatever person previousId names into the
  userId's person, whether previousId was an anonymous id or an older user id.

Person ids are derived from the first identity a person was seen with, so replaying the
log produces the same ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b

Identity = tuple[str, str]  # (kind, value), kind in {"user", "anon"}


def person_id_for(identity: Identity) -> str:
    kind, value = identity
    return "p_" + blake2b(f"{kind}\x00{value}".encode(), digest_size=10).hexdigest()


@dataclass(frozen=True, slots=True)
class Resolution:
    person_id: str
    created: bool = False
    links: tuple[Identity, ...] = ()  # identities to point at person_id
    merges: tuple[str, ...] = ()  # people to fold into person_id


Lookup = Callable[[Identity], str | None]  # identity -> person id
UserOf = Callable[[str], str | None]  # person id -> its userId, None for anonymous people


def resolve(
    *,
    type: str,
    user_id: str | None,
    anonymous_id: str | None,
    previous_id: str | None,
    lookup: Lookup,
    user_of: UserOf,
) -> Resolution:
    if type == "alias" and previous_id is not None:
        return _resolve_alias(user_id or anonymous_id, previous_id, lookup)
    if user_id is not None:
        return _resolve_user(user_id, anonymous_id, lookup, user_of)
    assert anonymous_id is not None, "validation guarantees userId or anonymousId"
    anon: Identity = ("anon", anonymous_id)
    existing = lookup(anon)
    if existing is not None:
        return Resolution(existing)
    return Resolution(person_id_for(anon), created=True, links=(anon,))


def _resolve_user(user_id: str, anonymous_id: str | None, lookup: Lookup, user_of: UserOf) -> Resolution:
    user: Identity = ("user", user_id)
    anon: Identity | None = ("anon", anonymous_id) if anonymous_id is not None else None
    p_user = lookup(user)
    p_anon = lookup(anon) if anon is not None else None
    if p_user is not None:
        if anon is None or p_anon == p_user:
            return Resolution(p_user)
        if p_anon is None:
            return Resolution(p_user, links=(anon,))
        if user_of(p_anon) is None:
            return Resolution(p_user, merges=(p_anon,))
        return Resolution(p_user)
    if p_anon is not None and user_of(p_anon) is None:
        return Resolution(p_anon, links=(user,))
    links = (user,) if anon is None or p_anon is not None else (user, anon)
    return Resolution(person_id_for(user), created=True, links=links)


def _resolve_alias(target_id: str | None, previous_id: str, lookup: Lookup) -> Resolution:
    assert target_id is not None
    target: Identity = ("user", target_id)
    previous = [("user", previous_id), ("anon", previous_id)]
    p_target = lookup(target)
    p_previous = next((p for p in (lookup(i) for i in previous) if p is not None), None)
    if p_target is None and p_previous is None:
        return Resolution(person_id_for(target), created=True, links=(target, *previous))
    if p_target is None:
        assert p_previous is not None
        return Resolution(p_previous, links=(target,))
    if p_previous is None:
        return Resolution(p_target, links=tuple(previous))
    if p_previous == p_target:
        return Resolution(p_target)
    return Resolution(p_target, merges=(p_previous,))
