"""net/candidates.py: the bounds of the dial-candidate table (pure: the time is an argument)."""

from __future__ import annotations

from gaia_p2p.net.candidates import DialCandidates


def test_one_source_names_at_most_per_source_candidates():
    c = DialCandidates(max_entries=100, per_source=20)
    assert sum(c.offer(f"fake{i}", "attacker", 0.0) for i in range(200)) == 20
    assert c.stats["refused_per_source"] == 180
    assert c.offer("honest", "someone-else", 0.0)  # the attacker's answer crowds out no one else
    assert len(c) == 21


def test_the_table_is_bounded_and_given_up_entries_make_room_once_forgotten():
    c = DialCandidates(max_entries=8, per_source=100, max_attempts=1, forget_s=600.0)
    for i in range(8):
        assert c.offer(f"p{i}", "s", 0.0)
    assert not c.offer("late", "s", 0.0) and c.stats["refused_full"] == 1
    for p in c.due(0.0, 100):
        c.dialled(p, False, 1.0)
    assert c.stats["given_up"] == 8 and c.due(2.0, 100) == []
    assert not c.offer("p0", "s", 2.0)  # named again: no new attempts while it is remembered
    assert not c.offer("late", "s", 300.0)  # still full: given-up entries are kept for forget_s
    assert c.offer("late", "s", 601.0)  # forgotten: room again
    assert len(c) == 1


def test_attempts_back_off_and_end():
    c = DialCandidates(max_attempts=3, backoff_s=10.0)
    c.offer("p", "s", 0.0)
    assert c.due(0.0, 16) == ["p"]
    c.dialled("p", False, 0.0)
    assert c.due(9.9, 16) == [] and c.due(10.0, 16) == ["p"]
    c.dialled("p", False, 10.0)
    assert c.due(29.9, 16) == [] and c.due(30.0, 16) == ["p"]
    c.dialled("p", False, 30.0)
    assert c.due(10_000.0, 16) == [] and c.stats["given_up"] == 1 and c.stats["dialled"] == 3


def test_due_is_capped_and_connected_peers_leave():
    c = DialCandidates()
    for i in range(30):
        c.offer(f"p{i}", f"s{i}", 0.0)
    assert len(c.due(0.0, 16)) == 16
    c.dialled("p0", True, 1.0)
    c.discard("p1")
    assert "p0" not in c and "p1" not in c and len(c) == 28


def test_failures_while_we_are_cut_off_cost_no_attempt():
    # a partition: every dial fails because our side is cut, not because the peer is gone; once
    # the link is back the peer is still a candidate (given up, it stayed out for forget_s)
    c = DialCandidates(max_attempts=3, backoff_s=10.0)
    c.offer("p", "s", 0.0)
    for k in range(20):
        assert c.due(10.0 * k, 16) == ["p"]
        c.dialled("p", False, 10.0 * k, isolated=True)
    assert c.stats["given_up"] == 0 and c.due(200.0, 16) == ["p"]
    c.dialled("p", True, 200.0)
    assert "p" not in c


def test_a_peer_we_were_connected_to_gets_new_attempts_when_named_again_a_made_up_one_does_not():
    c = DialCandidates(max_attempts=1, backoff_s=10.0, forget_s=600.0)
    c.connected("real")  # held a connection once, then lost it (a partition)
    for p in ("real", "fake"):
        assert c.offer(p, "s", 0.0)
        c.dialled(p, False, 1.0)  # given up: one attempt each
    assert c.due(2.0, 16) == [] and c.stats["given_up"] == 2
    assert c.offer("real", "s", 50.0) and c.due(50.0, 16) == ["real"]  # named again after the heal
    assert not c.offer("fake", "s", 50.0) and c.stats["renewed"] == 1
    for k in range(300):  # bounded: as many remembered as entries
        c.connected(f"p{k}")
    assert len(c._was_connected) == c.max_entries
