"""The Sybil-resistant network-size estimate (gaia_p2p.core.netsize), driven second by second."""

from __future__ import annotations

from gaia_p2p.core.netsize import SETTLE_S, SizeEstimate, estimate_size, window_for

HONEST = {f"honest{i}": 0.0 for i in range(3)}  # three peers there from our start


class Sim:
    """A node started at t = 0; ``tick`` recomputes the estimate once a second, as the shell does."""

    def __init__(self) -> None:
        self.now = 0.0
        self.topic: dict[str, float] = dict(HONEST)
        self.routing: dict[str, float] = dict(HONEST)
        self.heard: dict[str, tuple[float, float]] = {}
        self.est: SizeEstimate | None = None

    def tick(self, seconds: float = 1.0) -> int:
        end = self.now + seconds
        while self.now < end:
            self.now += 1.0
            self.est = estimate_size(now=self.now, started_at=0.0, topic_peers=self.topic,
                                     routing_peers=self.routing, heard=self.heard, prev=self.est)
        assert self.est is not None
        return self.est.nodes

    def join(self, ids: list[str], *, routing: bool = True) -> None:
        for p in ids:
            self.topic.setdefault(p, self.now)
            if routing:
                self.routing.setdefault(p, self.now)

    def leave(self, ids: list[str]) -> None:
        for p in ids:
            self.topic.pop(p, None)
            self.routing.pop(p, None)


def test_peers_seen_while_starting_count_at_once():
    s = Sim()
    assert s.tick() == 4  # us and the three
    s.join([f"early{i}" for i in range(10)])
    assert s.tick() == 14  # still starting: a joiner errs on the quiet side


def test_sybils_that_join_and_leave_move_nothing():
    s = Sim()
    s.tick(300)
    assert s.est.nodes == 4
    sybils = [f"sybil{i}" for i in range(1000)]
    s.join(sybils)
    assert s.tick(SETTLE_S - 5) == 4  # 55 s on the topic and in the routing table: not counted yet
    s.leave(sybils)
    assert s.tick(10) == 4
    assert s.tick(600) == 4  # and nothing lingers


def test_sybils_that_stay_move_it_by_little_and_it_falls_back_when_they_leave():
    s = Sim()
    s.tick(300)
    sybils = [f"sybil{i}" for i in range(1000)]
    s.join(sybils)
    assert s.tick(SETTLE_S) <= 5  # settled just now
    seen = [s.tick(10) for _ in range(6)]  # the next minute: at most x2 + 4
    assert seen == sorted(seen) and seen[-1] <= 2 * 4 + 4 + 1, seen
    s.leave(sybils)
    assert s.tick() == 4  # back at once


def test_honest_growth_over_minutes_is_followed():
    s = Sim()
    s.tick(300)
    newcomers = [f"node{i}" for i in range(36)]  # 4 -> 40 nodes
    for i in range(0, 36, 6):  # six at a time, every 20 s
        s.join(newcomers[i:i + 6])
        s.tick(20)
    sizes = {t: s.tick(30) for t in range(8)}  # then every 30 s
    assert max(sizes.values()) == 40
    reached = 420 + 30 * min(t for t, n in sizes.items() if n == 40)
    print(f"4 -> 40 nodes, joined over 2 minutes (300 s - 420 s): estimate at 40 by {reached} s")
    assert reached <= 300 + 6 * 60  # within 6 minutes of the first join
    assert s.tick(600) == 40  # and it stays there


def test_routing_table_and_telemetry_count_when_the_topic_undercounts():
    s = Sim()
    s.tick(300)
    far = [f"far{i}" for i in range(20)]
    for p in far:
        s.routing[p] = s.now  # in the routing table, not connected on the topic
    assert s.tick(SETTLE_S + 300) == 24
    for p in far:
        s.routing.pop(p)
        s.heard[p] = (s.now, s.now)  # heard on telemetry instead
    assert s.tick() == 4  # first heard just now: not settled
    assert s.tick(SETTLE_S + 300) == 21  # the 20 heard and us (the 3 honest send no heartbeats here)
    assert s.tick(window_for(0.0)) == 4  # no heartbeat for the window: gone


def test_window_grows_with_the_heartbeat_period():
    assert window_for(5.0) == 600.0
    assert window_for(800.0) == 2000.0


def test_the_shell_tracks_a_bounded_number_of_peers():
    from gaia_p2p.core.netsize import MAX_TRACKED, first_seen

    seen = first_seen({}, (f"p{i}" for i in range(3 * MAX_TRACKED)), now=5.0)
    assert len(seen) == MAX_TRACKED
    again = first_seen(seen, ["p0", "new"], now=9.0)
    assert again == {"p0": 5.0, "new": 9.0}  # kept its first-seen time; who left is forgotten


def test_the_tracker_hears_a_bounded_number_of_islands_and_recounts_at_most_once_a_second():
    from gaia_p2p.core.netsize import MAX_HEARD, SizeTracker

    t = SizeTracker(started_at=0.0)
    for i in range(MAX_HEARD + 50):
        t.heard_island(f"i{i}", now=float(i))
    assert len(t.heard) == MAX_HEARD and "i0" not in t.heard  # the oldest heard went first
    t.heard_island("i60", now=9999.0)
    assert t.heard["i60"] == (60.0, 9999.0) and next(reversed(t.heard)) == "i60"  # first kept, moved last
    assert not t.fresh(10.0)
    assert t.observe(now=10.0, topic_peers=["a", "b"], routing_peers=[], period_s=5.0) >= 3
    assert t.fresh(10.5) and not t.fresh(11.0)
