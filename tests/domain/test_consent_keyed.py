"""The keyed ledger's pure rules: MACs under the ledger key, and no consent from a record
that does not verify."""

from __future__ import annotations

from dataclasses import replace

from momently.domain.consent import (
    GENESIS,
    Grant,
    Policy,
    Record,
    chain_hash,
    chain_mac,
    check,
    mac_holds,
    verify_chain,
)

KEY = b"k" * 32


def keyed(*grants: Grant, key: bytes = KEY) -> list[Record]:
    out, prev = [], GENESIS
    for i, g in enumerate(grants, 1):
        h = chain_mac(key, prev, i, "acme", g)
        out.append(Record(i, g, prev, h))
        prev = h
    return out


GRANT = Grant("ada", None, "email", "marketing", True, "api", 1_000, key_id=3)
REVOKE = Grant("ada", None, "email", "marketing", False, "api", 2_000, key_id=3)


def test_a_rewritten_record_with_a_recomputed_unkeyed_hash_does_not_verify() -> None:
    records = keyed(GRANT, REVOKE)
    assert verify_chain("acme", records, KEY).ok
    forged_grant = replace(REVOKE, granted=True)
    forged = Record(2, forged_grant, records[0].hash, chain_hash(records[0].hash, 2, "acme", forged_grant))
    assert not mac_holds(KEY, "acme", forged)
    assert [b.seq for b in verify_chain("acme", [records[0], forged], KEY).breaks] == [2]
    # nor does a MAC made with another key, or the key id changed
    assert not mac_holds(KEY, "acme", keyed(GRANT, key=b"x" * 32)[0])
    assert not mac_holds(KEY, "acme", replace(records[0], grant=replace(GRANT, key_id=4)))


def test_an_unverified_record_means_no_consent_for_anything() -> None:
    records = keyed(GRANT)
    policy = Policy()
    assert check(records, "email", "marketing", policy, now_ms=5_000).allowed
    bad = [replace(records[0], verified=False)]
    for channel, purpose in (("email", "marketing"), ("sms", "transactional")):
        verdict = check(bad, channel, purpose, policy, now_ms=5_000)
        assert (verdict.allowed, verdict.reason, verdict.seq) == (False, "consent_unverified", 1)


def test_unkeyed_records_verify_only_before_a_rekey() -> None:
    g = GRANT
    old = Record(
        1, replace(g, key_id=None), GENESIS, chain_hash(GENESIS, 1, "acme", replace(g, key_id=None)), None
    )
    assert verify_chain("acme", [old]).ok  # the chain as it was written
    assert verify_chain("acme", [old], KEY, unkeyed_ok=True).ok  # what rekey checks first
    assert not verify_chain("acme", [old], KEY).ok  # not trusted as it stands
    assert not mac_holds(KEY, "acme", old)
