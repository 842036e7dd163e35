"""The address guard's rules, as a table."""

from __future__ import annotations

import ipaddress
import re

import pytest

from momently.domain.addresses import (
    DEFAULT_PUSH_HOSTS,
    LOOPBACK_AND_PRIVATE,
    AddressPolicy,
    host_allowed,
    parse_networks,
)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared address space (carrier-grade NAT)
        ("100.127.255.254", False),
        ("0.0.0.0", False),
        ("::", False),
        ("224.0.1.1", False),  # multicast, even the globally scoped kind
        ("ff0e::1", False),
        ("240.0.0.1", False),  # reserved
        ("fd00::1", False),  # unique local
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:169.254.169.254", False),
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("::ffff:93.184.216.34", True),
    ],
)
def test_only_public_addresses_by_default(address: str, public: bool) -> None:
    assert (AddressPolicy().refused([address]) is None) is public


def test_an_allowed_network_opens_only_itself() -> None:
    policy = AddressPolicy.of(["10.0.0.0/8"])
    assert policy.refused(["10.20.30.40"]) is None
    assert policy.refused(["192.168.1.1"]) == "address_not_allowed"
    assert policy.refused(["10.1.1.1", "127.0.0.1"]) == "address_not_allowed"  # every answer counts


def test_the_deprecated_private_switch_never_opens_link_local_metadata() -> None:
    policy = AddressPolicy.of(LOOPBACK_AND_PRIVATE)
    assert policy.refused(["127.0.0.1", "10.0.0.1", "192.168.0.2", "fd00::2"]) is None
    assert policy.refused(["169.254.169.254"]) == "address_not_allowed"
    assert policy.refused(["100.64.0.1"]) == "address_not_allowed"


def test_no_answer_is_not_found_and_a_bad_network_is_named() -> None:
    assert AddressPolicy().refused([]) == "host_not_found"
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        parse_networks(["10.0.0.0/33"])
    assert parse_networks(["10.1.2.3/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("fcm.googleapis.com", True),
        ("FCM.googleapis.com.", True),
        ("updates.push.services.mozilla.com", True),
        ("web.push.apple.com", True),
        ("wns2-par02p.notify.windows.com", True),
        ("notify.windows.com", False),
        ("evilnotify.windows.com", False),
        ("fcm.googleapis.com.evil.example", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
    ],
)
def test_push_hosts(host: str, allowed: bool) -> None:
    assert host_allowed(host, DEFAULT_PUSH_HOSTS) is allowed
