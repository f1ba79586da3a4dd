"""An honest "best": periodic tests on fresh episodes (core/target.py), the ranking that puts a
tested score above any untested estimate (core/ranking.py), the heartbeat's r4 keys and their
vectors (protocols/vectors/telemetry-v1.json), and how status and watch show them."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import numpy as np
import pytest

from gaia_p2p.core.ranking import Basis, network_best, rank, standing
from gaia_p2p.core.target import TargetTest, Why
from gaia_p2p.core.telemetry import LastTest, PoolShare, Telemetry, decode_telemetry, encode_telemetry, to_json
from gaia_p2p.errors import RemoteProtocolError

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "telemetry-v1.json").read_text())
EXP = VECTORS["experiment_id"]
PEER = "12D3KooWDkEtg6nnMgpSciWD8pkaDJCTyrTkWP9DyNhaht9DPGLN"
SCORES = {"mean": 150.0, "std": 80.0, "min": -90.0, "solved_share": 0.3, "episodes": 20}


# ---------------------------------------------------------------- periodic tests


def test_a_periodic_test_waits_for_its_share_of_the_training_episodes():
    t = TargetTest(None, interval_s=0.0, share=0.05, test_episodes=20)
    x, y, z = np.zeros(3), np.ones(3), np.full(3, 2.0)
    kw = dict(best_fitness=90.0, best_n=1, deterministic=False)
    assert t.due(best_params=x, now=0.0, training_episodes=399, **kw) is None  # 20 > 5 % of 399
    assert t.due(best_params=x, now=0.0, training_episodes=400, **kw) == Why.PERIODIC
    r = t.record(SCORES, generation=12, episodes=400, source="local", spent_episodes=20, why=Why.PERIODIC,
                 at=1.7e9, estimate=90.0)
    assert r.passed is None and r.why == "periodic" and t.episodes_used == 20 and t.tests == {"periodic": 1}
    assert t.is_current(x) and not t.is_current(y)
    assert t.due(best_params=x, now=1.0, training_episodes=10**6, **kw) is None  # the same resident
    assert t.due(best_params=y, now=1.0, training_episodes=799, **kw) is None  # 40 > 5 % of 799
    assert t.due(best_params=y, now=1.0, training_episodes=800, **kw) == Why.PERIODIC
    t.record(SCORES, generation=20, episodes=800, source=PEER, spent_episodes=20, why=Why.PERIODIC)
    # the share bounds every test's episodes: 40 of 800 spent, so the next one waits for 1200
    assert t.due(best_params=z, now=2.0, training_episodes=1199, **kw) is None
    assert t.due(best_params=z, now=2.0, training_episodes=1200, **kw) == Why.PERIODIC


def test_periodic_tests_keep_the_interval_and_a_rescored_resident():
    t = TargetTest(None, interval_s=20.0, share=0.5, test_episodes=10)
    x, y = np.zeros(3), np.ones(3)
    kw = dict(best_fitness=10.0, deterministic=False, training_episodes=10**6)
    assert t.due(best_params=x, best_n=0, now=0.0, **kw) is None  # provisional: not re-scored yet
    assert t.due(best_params=None, best_n=3, now=0.0, **kw) is None
    assert t.due(best_params=x, best_n=1, now=0.0, **kw) == Why.PERIODIC
    assert t.due(best_params=y, best_n=1, now=19.0, **kw) is None
    assert t.due(best_params=y, best_n=1, now=20.0, **kw) == Why.PERIODIC


@pytest.mark.parametrize("share,deterministic", [(0.0, False), (0.05, True)])
def test_no_periodic_test_when_off_or_on_a_deterministic_problem(share, deterministic):
    t = TargetTest(None, interval_s=0.0, share=share, test_episodes=1)
    assert t.due(best_params=np.zeros(3), best_fitness=1.0, best_n=5, deterministic=deterministic, now=0.0,
                 training_episodes=10**9) is None


def test_the_target_test_is_not_bounded_by_the_share_and_a_periodic_pass_reaches_the_target():
    t = TargetTest(200.0, interval_s=0.0, share=0.05, test_episodes=100)
    x, y = np.zeros(3), np.ones(3)
    kw = dict(best_n=1, deterministic=False, now=0.0)
    assert t.due(best_params=x, best_fitness=210.0, training_episodes=0, **kw) == Why.TARGET
    t.record(SCORES | {"mean": 190.0, "episodes": 100}, generation=5, episodes=0, source="local",
             spent_episodes=100, why=Why.TARGET)
    assert t.last.passed is False and t.reached is None
    # below the target, a periodic test: it measures the same thing, so a pass is a pass
    assert t.due(best_params=y, best_fitness=150.0, training_episodes=4000, **kw) == Why.PERIODIC
    r = t.record(SCORES | {"mean": 201.0, "episodes": 100}, generation=9, episodes=4000, source="local",
                 spent_episodes=100, why=Why.PERIODIC)
    assert r.passed and t.reached == r and t.tests == {"target": 1, "periodic": 1}
    # reached: an estimate above the target no longer calls for a test outside the share
    z = np.full(3, 2.0)
    assert t.due(best_params=z, best_fitness=250.0, training_episodes=5999, **kw) is None  # 300 > 5 % of 5999
    assert t.due(best_params=z, best_fitness=250.0, training_episodes=6000, **kw) == Why.PERIODIC


def test_a_problem_without_a_solved_threshold_has_no_solved_share():
    t = TargetTest(None, interval_s=0.0, share=1.0, test_episodes=2)
    t.due(best_params=np.zeros(2), best_fitness=0.0, best_n=1, deterministic=False, now=0.0, training_episodes=10)
    r = t.record(SCORES | {"solved_share": None}, generation=1, episodes=10, source="local", spent_episodes=2,
                 why=Why.PERIODIC)
    assert r.solved_share is None and r.as_dict()["why"] == "periodic"


# ---------------------------------------------------------------- ranking


def row(peer: str, best: float | None, tested: float | None = None, *, exact: bool = False,
        current: bool = True) -> dict:
    return {"peer_id": peer, "best_fitness": best, "exact": exact,
            "tested": None if tested is None else {"mean": tested, "episodes": 100, "generation": 7, "at": 0.0,
                                                   "current": current, "source": "local"}}


def test_a_tested_180_ranks_above_an_untested_240_and_the_240_is_named():
    rows = [row("a", 240.0), row("b", 230.0, tested=180.0), row("c", 200.0, tested=150.0), row("d", None),
            row("e", 100.0)]
    ranked = rank(rows)
    assert [r["peer_id"] for _, r in ranked] == ["b", "c", "a", "e", "d"]
    assert [s.basis for s, _ in ranked] == [Basis.TESTED, Basis.TESTED, Basis.ESTIMATE, Basis.ESTIMATE, Basis.NONE]
    nb = network_best(rows)
    assert (nb.best.peer_id, nb.best.score, nb.best.estimate) == ("b", 180.0, 230.0)
    assert nb.untested_above.peer_id == "a" and nb.untested_above.score == 240.0


def test_estimates_rank_among_themselves_when_nothing_is_tested():
    nb = network_best([row("a", 10.0), row("b", 30.0), row("c", None)])
    assert nb.best.peer_id == "b" and nb.best.basis == Basis.ESTIMATE and nb.untested_above is None
    assert network_best([row("x", None)]).best is None and network_best([]).best is None


def test_exact_scores_rank_by_the_number_and_ties_by_peer_id():
    rows = [row("b", -1.0, exact=True), row("a", -1.0, exact=True), row("c", -0.5, exact=True)]
    assert [r["peer_id"] for _, r in rank(rows)] == ["c", "a", "b"]
    assert network_best(rows).best.basis == Basis.EXACT


def test_a_test_of_an_earlier_resident_still_ranks_as_tested():
    s = standing(row("a", 250.0, tested=140.0, current=False))
    assert s.basis == Basis.TESTED and s.score == 140.0 and s.tested["current"] is False


# ---------------------------------------------------------------- the heartbeat (r4)


def heartbeat(**kw) -> Telemetry:
    base = dict(experiment_id=EXP, time=1.7e9, generation=412, evaluations=14000, episodes=14600, evals_per_s=300.5,
                best_fitness=240.25, mean_fitness=-20.5, sigma=0.25, algorithm="cmaes", settings={"popsize": 32})
    return Telemetry(**(base | kw))


def test_the_r5_pool_key_round_trips_and_watch_shows_each_members_share():
    from gaia_p2p.tools.watch import pool_shares, render

    members = [f"12D3KooW{c * 44}" for c in "ABC"]
    beats = {m: heartbeat(pool=PoolShare(pool_id="3f2a91c04b7de815", members=3, own=own, checks=5, evicted=0))
             for m, own in zip(members, (300, 100, 100))}
    for t in beats.values():
        assert decode_telemetry(encode_telemetry(t), experiment_id=EXP) == t
    assert "pool" not in msgpack.unpackb(encode_telemetry(heartbeat()))  # an island: no key at all
    islands = [to_json(m, t, received_at=1000.0) for m, t in beats.items()] + [to_json(PEER, heartbeat(), 1000.0)]
    shares = pool_shares(islands)
    assert list(shares) == ["3f2a91c04b7de815"] and shares["3f2a91c04b7de815"]["share"][members[0]] == 0.6
    from rich.console import Console

    console = Console(width=220, record=True)
    console.print(render({"islands": islands}, "test", now=1000.0))
    text = console.export_text()
    assert "3f2a91 x3 60%" in text and "3f2a91 x3 20%" in text, text
    assert "pool 3f2a91c04b7de815: 3 members (3 seen here), 500 items evaluated, 15 spot checks, 0 evicted" in text


def test_a_member_that_does_not_keep_the_pools_resident_is_not_ranked_by_its_stale_best():
    """r6: only the keeper (core/pool.py Pool.keeper) holds the pool's resident; another member's
    best is of a resident it kept earlier. Its heartbeat says so (``kp`` false) and the views rank
    the pool by the keeper, even where the stale number is higher."""
    from rich.console import Console

    from gaia_p2p.tools.watch import render

    keeper, other = (f"12D3KooW{c * 44}" for c in "KO")
    share = PoolShare(pool_id="3f2a91c04b7de815", members=2, own=200, checks=3, evicted=0)
    beats = {keeper: heartbeat(pool=share, best_fitness=120.0),
             other: heartbeat(pool=dataclasses.replace(share, keeps=False), best_fitness=250.0)}
    for t in beats.values():
        assert decode_telemetry(encode_telemetry(t), experiment_id=EXP) == t
    assert "kp" not in msgpack.unpackb(encode_telemetry(beats[keeper]))["pool"]  # a keeper's: r5, byte for byte
    assert msgpack.unpackb(encode_telemetry(beats[other]))["pool"]["kp"] is False
    islands = [to_json(m, t, received_at=1000.0) for m, t in beats.items()]
    assert standing(islands[1]).basis == Basis.NONE and standing(islands[1]).estimate == 250.0
    assert network_best(islands).best.peer_id == keeper
    console = Console(width=220, record=True)
    console.print(render({"islands": islands}, "test", now=1000.0))
    text = console.export_text()
    assert f"pool: …{keeper[-6:]}" in text, text  # the non-keeper's best cell points at the keeper
    assert "250.00" not in text and "120.00" in text, text
    assert f"the resident kept by …{keeper[-6:]}" in text, text


def test_the_r4_keys_round_trip_and_show_in_the_json_form():
    t = heartbeat(tested=LastTest(mean=148.0, episodes=100, generation=380, age=95.5, current=False, source=PEER))
    assert decode_telemetry(encode_telemetry(t), experiment_id=EXP) == t
    j = to_json(PEER, t, received_at=1000.0)
    assert j["tested"] == {"mean": 148.0, "episodes": 100, "generation": 380, "at": 904.5, "current": False,
                           "source": PEER} and j["exact"] is False
    e = heartbeat(exact=True)
    assert decode_telemetry(encode_telemetry(e)) == e and "tst" not in msgpack.unpackb(encode_telemetry(e))
    plain = msgpack.unpackb(encode_telemetry(heartbeat()))
    assert "exact" not in plain and "tst" not in plain  # nothing to tell: an r3 heartbeat, byte for byte


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["name"])
def test_telemetry_vectors(v):
    data = bytes.fromhex(v["hex"])
    if v["expect"] != "ok":
        with pytest.raises(RemoteProtocolError) as e:
            decode_telemetry(data, experiment_id=EXP)
        assert e.value.reason == v["expect"]
        return
    t = decode_telemetry(data, experiment_id=EXP)
    assert t.exact == v["decoded"]["exact"]
    want = v["decoded"]["tst"]
    if want is None:
        assert t.tested is None
    else:
        assert t.tested == LastTest(mean=want["mean"], episodes=want["n"], generation=want["gen"], age=want["age"],
                                  current=want["cur"], source=want["src"])
    pool = v["decoded"].get("pool")
    assert t.pool == (None if pool is None else PoolShare(pool_id=pool["id"], members=pool["n"], own=pool["own"],
                                                         checks=pool["chk"], evicted=pool["ev"],
                                                         keeps=pool.get("kp", True)))


def test_the_vectors_cover_each_r4_rule():
    names = {v["name"] for v in VECTORS["vectors"]}
    assert {"ok_r3_no_test", "ok_r4_exact", "bad_tst_mean_nan", "bad_tst_src", "bad_exact_not_bool"} <= names
    assert {"ok_r5_pool", "bad_pool_id_upper", "bad_pool_no_members", "bad_pool_chk_missing"} <= names
    assert {"ok_r6_pool_not_keeper", "bad_pool_kp_not_bool"} <= names
    assert {v["expect"] for v in VECTORS["vectors"]} == {"ok", "bad_field", "non_finite"}


# ---------------------------------------------------------------- gaia-node status and watch

NOW = 1.7e9
A, B, C = "12D3KooWAAAAAAAAAAAAaaaaaa", "12D3KooWBBBBBBBBBBBBbbbbbb", "12D3KooWCCCCCCCCCCCCcccccc"


def status_doc(*, exact: bool = False, last_test: dict | None = None, islands: list | None = None) -> dict:
    """A status document (protocols/gaia-status-v1.md) with what render_status reads."""
    return {
        "v": 1, "peer_id": A, "addrs": [f"/ip4/127.0.0.1/tcp/4001/p2p/{A}"], "peers": [B], "topic_peers": [B],
        "routing_table_size": 1, "experiment_id": EXP, "topics": ["/gaia/x/migrants/1"],
        "problem": {"name": "sphere" if exact else "lunarlander"},
        "optimizer": {"algorithm": "cmaes", "popsize": 32, "dim": 212, "settings": {"sigma0": 0.5}, "seed": 1},
        "migration": {"interval": 10, "topology": "full", "enabled": True},
        "island": {"generation": 412, "evaluations": 14000, "episodes": 14600, "best_fitness": 240.25,
                   "best_source": "local", "mean_fitness": -20.5, "sigma": 0.25, "evals_per_s": 300.0,
                   "best_n": 3, "exact": exact},
        "migrants": {"sent": 1, "received": 2, "accepted": 1, "rejected": {}},
        "target": {"fitness": None if exact else 200.0, "last_test": last_test, "reached": None,
                   "test_episodes_used": 700, "share": 0.0 if exact else 0.05, "tests": {}},
        "network": {"islands": islands or []}, "uptime_s": 60.0, "data_dir": "/tmp/x",
    }


LAST = {"generation": 380, "episodes": 13000, "mean": 148.0, "std": 95.0, "min": -120.0, "solved_share": 0.4,
        "test_episodes": 100, "passed": False, "source": B, "why": "periodic", "at": NOW - 300, "estimate": 236.0,
        "current": False}


def test_status_shows_the_tested_score_next_to_the_estimate_and_ranks_by_it():
    from gaia_p2p.cli import render_status

    islands = [row(A, 240.25, tested=148.0, current=False), row(B, 250.0), row(C, 190.0, tested=180.0)]
    text = render_status(status_doc(last_test=LAST, islands=islands), now=NOW)
    assert "fitness         best 240.250 (estimate of 3 re-scores, from local)" in text
    assert ("tested          148 +- 95 over 100 fresh episodes, an earlier resident (generation 380, from "
            f"{B[:16]}, periodic test, 5 min ago, estimate then 236); tests spent 700 episodes (4.8 % of training, "
            "at most 5 %)") in text
    assert f"best 180.000 (tested on fresh episodes, …{C[-6:]})" in text
    assert f"higher untested estimate 250.000 (…{B[-6:]}), not ranked above it" in text
    assert "last test 148 over 100 episodes (not yet)" in text  # the target line


def test_status_before_any_test_says_when_tests_come():
    from gaia_p2p.cli import render_status

    text = render_status(status_doc(islands=[row(A, 240.25)]), now=NOW)
    assert "tested          not yet (fresh-episode tests: each new resident within 5 % of the episodes)" in text
    assert f"best 240.250 (an untested estimate, …{A[-6:]})" in text


def test_status_on_a_deterministic_problem_says_exact_and_has_no_tested_line():
    from gaia_p2p.cli import render_status

    text = render_status(status_doc(exact=True, islands=[row(A, -0.5, exact=True), row(B, -0.25, exact=True)]),
                         now=NOW)
    assert "(exact, from local)" in text and "tested " not in text and "untested" not in text
    assert f"best -0.250 (exact, …{B[-6:]})" in text


def watch_text(snapshot: dict) -> str:
    from rich.console import Console

    from gaia_p2p.tools.watch import render

    console = Console(record=True, width=220, color_system=None)
    console.print(render(snapshot, "test", now=NOW))
    return console.export_text()


def test_watch_ranks_tested_islands_first_and_marks_the_untested():
    islands = [row(A, 240.0) | {"time": NOW}, row(B, 230.0, tested=180.0) | {"time": NOW},
               row(C, 200.0, tested=150.0, current=False) | {"time": NOW}]
    for r in islands:
        if r["tested"]:
            r["tested"]["at"] = NOW - 30
    text = watch_text({"islands": islands})
    lines = [ln for ln in text.splitlines() if ln.startswith("│ …")]
    assert [ln.split()[1] for ln in lines] == [f"…{B[-6:]}", f"…{C[-6:]}", f"…{A[-6:]}"]
    assert "estimate" in text and "tested" in text
    assert "180.00 (100 ep) 30 s" in lines[0] and "150.00* (100 ep) 30 s" in lines[1] and "untested" in lines[2]
    assert "tested islands rank first" in text
    assert f"network best 180.00 (tested on fresh episodes, …{B[-6:]}); higher untested estimate 240.00" in text


def test_watch_on_a_deterministic_problem_has_no_tested_column():
    text = watch_text({"islands": [row(A, -1.0, exact=True) | {"time": NOW}, row(B, -0.5, exact=True) | {"time": NOW}]})
    assert "best (exact)" in text and "tested" not in text and "estimate" not in text
    assert f"network best -0.50 (exact, …{B[-6:]})" in text


def test_the_plot_draws_each_test_once_from_logs_and_watch_captures(tmp_path):
    from gaia_p2p.tools.plot import network_tested, parse_logs, plot_logs

    log, cap = tmp_path / "node.log", tmp_path / "watch.ndjson"
    log.write_text("\n".join(json.dumps(x) for x in [
        {"event": "generation_completed", "timestamp": "2026-12-03T12:00:00+00:00", "generation": 10,
         "evaluations": 400, "best_fitness": 240.0, "island_id": A[-8:]},
        {"event": "policy_tested", "timestamp": "2026-12-03T12:00:01+00:00", "generation": 10, "mean": 148.0,
         "test_episodes": 100, "island_id": A[-8:], "why": "periodic"},
        {"event": "generation_completed", "timestamp": "2026-12-03T12:00:02+00:00", "generation": 11,
         "evaluations": 440, "best_fitness": 241.0, "island_id": A[-8:]},
    ]) + "\n")
    t0 = datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()
    tested = {"mean": 148.0, "episodes": 100, "generation": 10, "at": t0 + 1.2, "current": True, "source": "local"}
    cap.write_text("\n".join(json.dumps(x) for x in [
        {"event": "telemetry", "peer_id": A, "generation": 11, "evaluations": 440, "best_fitness": 241.0,
         "time": t0 + 2.0, "tested": tested},  # the test the log told already
        {"event": "telemetry", "peer_id": A, "generation": 12, "evaluations": 480, "best_fitness": 241.0,
         "time": t0 + 3.0, "tested": tested | {"generation": 12, "mean": 160.0, "at": t0 + 2.9}},
        {"event": "telemetry", "peer_id": B, "generation": 3, "evaluations": 90, "best_fitness": 10.0,
         "time": t0 + 3.0, "tested": None},
    ]) + "\n")
    parsed = parse_logs([log, cap])
    assert [m for _, m, _ in parsed.series[A[-8:]].tests] == [148.0, 160.0] and not parsed.series[B[-8:]].tests
    assert plot_logs([log, cap], tmp_path / "p.png")["n_tests"] == 2
    xs, ys = network_tested(parsed.series.values())  # from A's first test on; B has none
    assert ys[0] == 148.0 and ys[-1] == 160.0 and xs[-1] == 480 + 90


def test_the_tests_so_far_survive_a_checkpoint():
    t = TargetTest(200.0, interval_s=0.0, share=0.05, test_episodes=20)
    x = np.arange(3.0)
    assert t.due(best_params=x, best_fitness=1.0, best_n=1, deterministic=False, now=0.0, training_episodes=400)
    t.record(SCORES, generation=3, episodes=400, source="local", spent_episodes=20, why=Why.PERIODIC, at=5.0)
    data = msgpack.unpackb(msgpack.packb(t.to_checkpoint(), use_bin_type=True), raw=False)
    u = TargetTest(200.0, interval_s=0.0, share=0.05, test_episodes=20)
    u.restore(data)
    assert (u.last, u.reached, u.episodes_used, u.tests) == (t.last, None, 20, {"periodic": 1})
    assert u.is_current(x.copy()) and u.due(best_params=x, best_fitness=1.0, best_n=1, deterministic=False, now=9.0,
                                            training_episodes=10**6) is None  # not the same resident again
    with pytest.raises((KeyError, TypeError, ValueError)):
        u.restore(data | {"last_key": "not bytes"})


@pytest.mark.parametrize("share", [-0.01, 0.51, float("nan")])
def test_test_share_is_a_bounded_share(share, tmp_path):
    from gaia_p2p.config import build_config
    from gaia_p2p.errors import ConfigError

    assert build_config(env={}, overrides={"": {"data_dir": tmp_path}}).test_share == 0.05
    with pytest.raises(ConfigError, match="test_share"):
        build_config(env={}, overrides={"": {"data_dir": tmp_path, "test_share": share}})
