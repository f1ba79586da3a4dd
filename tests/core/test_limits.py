"""core/limits.py: per-IP admission of inbound connections."""

import pytest

from gaia_p2p.core.limits import InboundLimits


def test_per_ip_cap_holds_and_comes_back():
    lim = InboundLimits(per_ip=2)
    assert lim.admit("192.0.2.1") and lim.admit("192.0.2.1")
    assert not lim.admit("192.0.2.1")  # the third from one address
    assert lim.admit("192.0.2.2")  # another address is not affected
    assert lim.refused["per_ip"] == 1
    lim.release("192.0.2.1")
    assert lim.admit("192.0.2.1")  # a slot came back


def test_table_holds_only_addresses_with_connections():
    """1,000 addresses that come and go leave nothing behind (a week of churn: no growth)."""
    lim = InboundLimits(per_ip=4)
    for i in range(1000):
        ip = f"198.51.{i // 256}.{i % 256}"
        assert lim.admit(ip)
        lim.release(ip)
    assert len(lim.held) == 0


def test_exempt_networks_and_non_ip_links_are_not_limited():
    lim = InboundLimits(per_ip=1, exempt=["127.0.0.0/8", "::1/128"])
    assert all(lim.admit("127.0.0.1") for _ in range(50))
    assert all(lim.admit("::1") for _ in range(5))
    assert lim.admit(None) and lim.admit(None)
    assert lim.admit("10.0.0.1") and not lim.admit("10.0.0.1")
    assert not lim.held.get("127.0.0.1")


def test_bad_cap_is_our_bug():
    with pytest.raises(ValueError):
        InboundLimits(per_ip=0)


def test_ipv6_is_limited_per_64_and_mapped_ipv4_is_its_ipv4():
    """A /64 is one subscriber's (2^64 addresses): limiting single IPv6 addresses would limit nothing."""
    lim = InboundLimits(per_ip=2, exempt=["127.0.0.0/8", "::1/128"])
    assert lim.admit("2001:db8:1:2::1") and lim.admit("2001:db8:1:2:ffff::9")
    assert not lim.admit("2001:db8:1:2::3")  # same /64
    assert lim.admit("2001:db8:1:3::1")  # the next /64
    assert lim.admit("::ffff:10.0.0.1") and lim.admit("10.0.0.1") and not lim.admit("10.0.0.1")
    assert lim.admit("::ffff:127.0.0.1") and "127.0.0.1" not in lim.held  # loopback, however spelled
    lim.release("2001:db8:1:2::1")
    assert lim.admit("2001:db8:1:2::3")
    assert set(lim.held) == {"2001:db8:1:2::/64", "2001:db8:1:3::/64", "10.0.0.1"}
