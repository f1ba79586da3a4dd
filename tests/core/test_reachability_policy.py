"""The pure AutoNAT policy (gaia_p2p/core/reachability.py): verdicts -> public / private / unknown,
whom to ask, what a server may dial back, and its rate limits. No network, no clock."""

from __future__ import annotations

import numpy as np
import pytest

from gaia_p2p.core.reachability import (MAX_DIALBACK_ADDRS, MAX_REQUEST_ADDRS, MAX_VERDICTS, DialBackLimiter,
                                        Reachability, ReachabilityTracker, Verdict, describe, dialback_targets,
                                        normalize_ip, pick_servers)


def v(server: str, ok: bool, at: float = 0.0, addr: str | None = "/ip4/1.2.3.4/tcp/4001") -> Verdict:
    return Verdict(server=server, ok=ok, at=at, addr=addr if ok else None)


def test_unknown_until_enough_agreeing_verdicts():
    t = ReachabilityTracker(confirmations=2)
    assert t.status == Reachability.UNKNOWN
    assert t.record(v("a", True)) is None  # one is not enough
    assert t.record(v("b", True)) == Reachability.PUBLIC
    assert t.record(v("c", True)) is None  # no change, no news


def test_private_needs_failures_to_outnumber_successes():
    t = ReachabilityTracker(confirmations=2)
    t.record(v("a", False))
    assert t.record(v("b", False)) == Reachability.PRIVATE
    t.record(v("c", True))  # a peer on our LAN can dial us; the internet cannot
    assert t.status == Reachability.PRIVATE


def test_a_tie_keeps_the_status_it_had():
    t = ReachabilityTracker(confirmations=2)
    t.record(v("a", True))
    t.record(v("b", True))
    t.record(v("c", False))
    assert t.record(v("d", False)) is None and t.status == Reachability.PUBLIC  # 2 : 2
    assert t.record(v("e", False)) == Reachability.PRIVATE  # 2 : 3


def test_a_peers_new_verdict_replaces_its_old_one():
    t = ReachabilityTracker(confirmations=2)
    t.record(v("a", True))
    t.record(v("a", True))  # one liar asked twice is still one voice
    assert t.status == Reachability.UNKNOWN and len(t.verdicts) == 1


def test_verdicts_expire_back_to_unknown():
    t = ReachabilityTracker(confirmations=1, ttl_s=100)
    t.record(v("a", True, at=0))
    assert t.update(100) is None and t.status == Reachability.PUBLIC
    assert t.update(100.5) == Reachability.UNKNOWN


def test_verdicts_are_bounded():
    t = ReachabilityTracker(confirmations=1)
    for i in range(MAX_VERDICTS + 5):
        t.record(v(f"p{i}", False, at=i))
    assert len(t.verdicts) == MAX_VERDICTS and "p0" not in t.verdicts


def test_confirmations_must_be_positive():
    with pytest.raises(ValueError):
        ReachabilityTracker(confirmations=0)


def test_the_status_line_in_words():
    t = ReachabilityTracker(confirmations=2)
    assert describe(t.summary(0)) == "unknown (asked 0 peers)"
    t.record(v("a", True))
    assert describe(t.summary(0)) == "unknown (1 of 1 peers dialled us back; 2 agreeing answers needed)"
    for p in "bc":
        t.record(v(p, True))
    assert describe(t.summary(0)) == "public (3 of 3 peers dialled us back at /ip4/1.2.3.4/tcp/4001)"
    f = ReachabilityTracker(confirmations=2)
    f.record(v("a", False))
    f.record(v("b", False))
    assert describe(f.summary(0)) == "private (no peer could dial us back; asked 2)"
    f.record(v("c", True))
    assert describe(f.summary(0)) == "private (only 1 of 3 peers dialled us back at /ip4/1.2.3.4/tcp/4001)"


def test_pick_servers_skips_recently_asked_and_is_deterministic_per_rng():
    peers = [f"p{i}" for i in range(10)]
    last = {"p0": 95.0, "p1": 0.0}
    a = pick_servers(peers, last, now=100, k=3, retry_after_s=60, rng=np.random.default_rng(1))
    b = pick_servers(peers, last, now=100, k=3, retry_after_s=60, rng=np.random.default_rng(1))
    assert a == b and len(a) == 3 and "p0" not in a
    assert sorted(pick_servers(["p0", "p1"], last, now=100, k=3, retry_after_s=60,
                               rng=np.random.default_rng(0))) == ["p1"]


def test_normalize_ip():
    assert normalize_ip("::ffff:10.0.0.1") == "10.0.0.1"
    assert normalize_ip("0:0:0:0:0:0:0:1") == "::1"
    assert normalize_ip("fe80::1%eth0") == "fe80::1"
    assert normalize_ip("example.com") is None


def test_dialback_only_to_the_observed_ip():
    addrs = [("10.0.0.1", 4001), ("10.0.0.2", 4001), None, ("::ffff:10.0.0.1", 4002), ("10.0.0.1", 4001),
             ("10.0.0.1", 0), ("10.0.0.1", 70000)]
    assert dialback_targets(addrs, "10.0.0.1") == [0, 3]  # another IP, non-TCP, duplicate, bad ports: never
    assert dialback_targets(addrs, None) == []
    assert dialback_targets(addrs, "not an ip") == []


def test_dialback_targets_are_bounded():
    many = [("10.0.0.1", 1000 + i) for i in range(100)]
    assert dialback_targets(many, "10.0.0.1") == list(range(MAX_DIALBACK_ADDRS))
    late = [("10.0.0.2", 1)] * MAX_REQUEST_ADDRS + [("10.0.0.1", 1)]
    assert dialback_targets(late, "10.0.0.1") == []  # past the entries a request may have: not looked at


def test_limiter_per_peer_per_ip_and_global():
    lim = DialBackLimiter(per_peer_s=10, per_peer_burst=2, global_per_s=1, global_burst=100)
    assert [lim.allow("a", "1.1.1.1", 0) for _ in range(3)] == [None, None, "rate_peer"]
    # other peer ids on the same IP share the IP's bucket (2 x burst = 4)
    assert [lim.allow(f"s{i}", "1.1.1.1", 0) for i in range(3)] == [None, None, "rate_ip"]
    lim2 = DialBackLimiter(per_peer_s=10, per_peer_burst=2, global_per_s=1, global_burst=3)
    assert [lim2.allow(f"p{i}", f"10.0.0.{i}", 0) for i in range(4)] == [None, None, None, "rate_global"]
    assert lim2.allow("p9", "10.0.0.9", 1.0) is None  # refilled at 1/s
    assert lim.allow("a", "1.1.1.1", 10.0) is None  # a's bucket refilled after per_peer_s


def test_limiter_tables_are_bounded():
    lim = DialBackLimiter(global_per_s=1e9, global_burst=1e9, max_keys=8)
    for i in range(100):
        lim.allow(f"p{i}", f"10.0.{i}.1", 0)
    assert len(lim.peer.tokens) <= 8 and len(lim.ip.tokens) <= 8


def test_limiter_per_ip_skips_exempt_networks():
    lim = DialBackLimiter(per_peer_s=10, per_peer_burst=2, global_per_s=1, global_burst=100,
                          exempt_ips=("127.0.0.0/8", "::1/128"))
    assert all(lim.allow(f"s{i}", "127.0.0.1", 0) is None for i in range(10))  # a one-machine swarm
    assert [lim.allow(f"t{i}", "10.0.0.1", 0) for i in range(5)] == [None] * 4 + ["rate_ip"]
