from __future__ import annotations

import pytest

from momently.domain.identity import Identity, Resolution, person_id_for, resolve

P_ANON = "p_anon"  # an anonymous person (browsing before login)
P_ADA = "p_ada"  # ada's person
P_BOB = "p_bob"
KNOWN: dict[Identity, str] = {
    ("anon", "a1"): P_ANON,
    ("user", "ada"): P_ADA,
    ("user", "bob"): P_BOB,
    ("anon", "bob-device"): P_BOB,
}
USERS = {P_ANON: None, P_ADA: "ada", P_BOB: "bob"}


def run(
    type_: str = "track", user: str | None = None, anon: str | None = None, previous: str | None = None
) -> Resolution:
    return resolve(
        type=type_,
        user_id=user,
        anonymous_id=anon,
        previous_id=previous,
        lookup=KNOWN.get,
        user_of=USERS.__getitem__,
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"anon": "a1"}, Resolution(P_ANON)),
        ({"anon": "new"}, Resolution(person_id_for(("anon", "new")), created=True, links=(("anon", "new"),))),
        ({"user": "ada"}, Resolution(P_ADA)),
        ({"user": "ada", "anon": "a1"}, Resolution(P_ADA, merges=(P_ANON,))),  # login after browsing
        ({"user": "ada", "anon": "fresh"}, Resolution(P_ADA, links=(("anon", "fresh"),))),
        ({"user": "ada", "anon": "bob-device"}, Resolution(P_ADA)),  # shared device: stays bob's
        ({"user": "cy", "anon": "a1"}, Resolution(P_ANON, links=(("user", "cy"),))),  # first login
        (
            {"user": "cy", "anon": "bob-device"},
            Resolution(person_id_for(("user", "cy")), created=True, links=(("user", "cy"),)),
        ),
        (
            {"user": "cy", "anon": "z"},
            Resolution(person_id_for(("user", "cy")), created=True, links=(("user", "cy"), ("anon", "z"))),
        ),
        ({"type_": "alias", "user": "ada", "previous": "a1"}, Resolution(P_ADA, merges=(P_ANON,))),
        ({"type_": "alias", "user": "ada", "previous": "bob"}, Resolution(P_ADA, merges=(P_BOB,))),
        (
            {"type_": "alias", "user": "new-id", "previous": "ada"},
            Resolution(P_ADA, links=(("user", "new-id"),)),
        ),
        (
            {"type_": "alias", "user": "ada", "previous": "ghost"},
            Resolution(P_ADA, links=(("user", "ghost"), ("anon", "ghost"))),
        ),
    ],
)
def test_resolution_table(kwargs: dict[str, str], expected: Resolution) -> None:
    assert run(**kwargs) == expected


def test_person_ids_are_stable() -> None:
    assert person_id_for(("user", "ada")) == person_id_for(("user", "ada"))
    assert person_id_for(("user", "ada")) != person_id_for(("anon", "ada"))
