"""Bootstrap addresses by name (gaia_p2p/net/dns.py), and reachability in a running node's status.

No DNS query may leave this machine: names are ``localhost`` (resolved by getaddrinfo from
/etc/hosts), names under ``.invalid`` (refused by our code before any query, RFC 6761), or TXT
records served by a fake resolver, since a real /dnsaddr lookup is the one thing that cannot run here.
"""

from __future__ import annotations

import pytest
import trio

from gaia_p2p.cli import main, render_status
from gaia_p2p.net import dns
from gaia_p2p.net.dns import MAX_ADDRS, MAX_DEPTH, MAX_TXT_RECORDS, NameNotResolved, resolve_addr, resolve_bootstrap
from gaia_p2p.node.runtime import run

from swarm_helpers import node_config, wait_until

A = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
B = "12D3KooWDdPYsDKT7JVHUEE7B789qbRdFVnGcq1vymuELBfZ8H3H"


def fake_txt(zone: dict[str, list[str]], asked: list[str] | None = None):
    async def txt(name: str) -> list[str]:
        if asked is not None:
            asked.append(name)
        if name not in zone:
            raise LookupError("no such name")
        return list(zone[name])

    return txt


@pytest.fixture
def no_dns(monkeypatch):
    """Any getaddrinfo but localhost, or any TXT lookup through the real resolver, fails the test."""
    real = trio.socket.getaddrinfo

    async def only_localhost(host, *a, **kw):
        assert host == "localhost", f"a DNS query for {host!r} would leave the machine"
        return await real(host, *a, **kw)

    async def no_txt(name):
        raise AssertionError(f"a TXT query for {name!r} would leave the machine")

    monkeypatch.setattr(trio.socket, "getaddrinfo", only_localhost)
    monkeypatch.setattr(dns, "system_txt", no_txt)


async def test_dns4_and_dns6_localhost_resolve_through_the_system_resolver(no_dns):
    with trio.fail_after(10):
        assert await resolve_addr(f"/dns4/localhost/tcp/4001/p2p/{A}") == [f"/ip4/127.0.0.1/tcp/4001/p2p/{A}"]
        # /dns6 asks for AAAA only: where /etc/hosts has no "::1 localhost" (this machine) that is the
        # one-line error a user would get, else ::1
        try:
            assert f"/ip6/::1/tcp/4001/p2p/{A}" in await resolve_addr(f"/dns6/localhost/tcp/4001/p2p/{A}")
        except NameNotResolved as e:
            assert "\n" not in str(e) and "/dns6/localhost" in str(e)
        assert await resolve_addr(f"/ip4/10.0.0.1/tcp/1/p2p/{A}") == [f"/ip4/10.0.0.1/tcp/1/p2p/{A}"]


async def test_dnsaddr_follows_txt_records_and_keeps_the_peer_asked_for(no_dns):
    """Parsing and recursion with a fake TXT resolver (a real lookup needs DNS traffic)."""
    zone = {
        "_dnsaddr.seed.example": [
            "v=spf1 -all",  # another TXT record on the name: not ours
            f"dnsaddr=/dnsaddr/eu.seed.example/p2p/{A}",
            f"dnsaddr=/ip4/192.0.2.9/tcp/4001/p2p/{B}",  # another peer: not the one asked for
            "dnsaddr=not a multiaddr",
        ],
        "_dnsaddr.eu.seed.example": [
            f"dnsaddr=/ip4/192.0.2.1/tcp/4001/p2p/{A}",
            f"dnsaddr=/dns4/localhost/tcp/4002/p2p/{A}",
            f"dnsaddr=/ip6/2001:db8::1/tcp/4001/p2p/{A}",
        ],
    }
    with trio.fail_after(10):
        got = await resolve_addr(f"/dnsaddr/seed.example/p2p/{A}", txt=fake_txt(zone))
        assert got == [f"/ip4/192.0.2.1/tcp/4001/p2p/{A}", f"/ip4/127.0.0.1/tcp/4002/p2p/{A}",
                       f"/ip6/2001:db8::1/tcp/4001/p2p/{A}"]
        # without /p2p/ID every record's peer is taken
        every = await resolve_addr("/dnsaddr/seed.example", txt=fake_txt(zone))
        assert f"/ip4/192.0.2.9/tcp/4001/p2p/{B}" in every and len(every) == 4


async def test_dnsaddr_recursion_and_fan_out_are_bounded(no_dns):
    loop = {"_dnsaddr.loop.example": [f"dnsaddr=/dnsaddr/loop.example/p2p/{A}"]}
    asked: list[str] = []
    with trio.fail_after(10):
        with pytest.raises(NameNotResolved) as e:
            await resolve_addr(f"/dnsaddr/loop.example/p2p/{A}", txt=fake_txt(loop, asked))
        assert len(asked) == MAX_DEPTH and "\n" not in str(e.value)
        wide = {"_dnsaddr.wide.example": [f"dnsaddr=/ip4/192.0.2.{i % 250}/tcp/{1000 + i}/p2p/{A}"
                                          for i in range(500)]}
        assert len(await resolve_addr(f"/dnsaddr/wide.example/p2p/{A}", txt=fake_txt(wide))) == MAX_ADDRS
        # only the first MAX_TXT_RECORDS records of a name are looked at
        late = {"_dnsaddr.late.example": ["v=other"] * MAX_TXT_RECORDS + [f"dnsaddr=/ip4/192.0.2.1/tcp/1/p2p/{A}"]}
        with pytest.raises(NameNotResolved):
            await resolve_addr(f"/dnsaddr/late.example/p2p/{A}", txt=fake_txt(late))


async def test_names_under_invalid_fail_without_a_query(no_dns):
    asked: list[str] = []
    with trio.fail_after(10):
        for addr in (f"/dns4/seed.invalid/tcp/4001/p2p/{A}", f"/dns6/seed.invalid./tcp/4001/p2p/{A}",
                     f"/dnsaddr/seed.invalid/p2p/{A}"):
            with pytest.raises(NameNotResolved) as e:
                await resolve_bootstrap([addr], txt=fake_txt({}, asked))
            msg = str(e.value)
            assert msg.startswith("config error: network.bootstrap = ") and "does not resolve" in msg
            assert "RFC 6761" in msg and "\n" not in msg
        assert asked == []  # not even the fake resolver was asked
        # a dnsaddr name with no records is the same one-line error
        with pytest.raises(NameNotResolved):
            await resolve_bootstrap([f"/dnsaddr/empty.example/p2p/{A}"], txt=fake_txt({"_dnsaddr.empty.example": []}))


def test_start_with_an_unresolvable_bootstrap_exits_2_with_one_line(tmp_path, capsys, no_dns):
    rc = main(["start", "--data-dir", str(tmp_path / "d"), "--listen", "/ip4/127.0.0.1/tcp/0",
               "--problem", "sphere", "--workers", "0",
               "--bootstrap", f"/dns4/seed.invalid/tcp/4001/p2p/{A}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.count("\n") == 0 and "network.bootstrap" in err and "seed.invalid" in err
    assert "Traceback" not in err


async def test_nodes_bootstrap_by_dns4_localhost_and_learn_they_are_public(tmp_path, no_dns):
    """Three in-process nodes on 127.0.0.1; two of them bootstrap by /dns4/localhost/... . Each peer
    can dial the others back, so they end up public, and status says so in words."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(run, node_config(tmp_path, 0))
            port = first.addrs()[0].split("/tcp/")[1].split("/")[0]
            by_name = f"/dns4/localhost/tcp/{port}/p2p/{first.peer_id}"
            others = [await nursery.start(run, node_config(tmp_path, i, bootstrap=(by_name,))) for i in (1, 2)]
            nodes = [first, *others]
            await wait_until(lambda: all(len(n.p2p.connected_peers()) >= 2 for n in nodes), "full mesh", 30)
            await wait_until(lambda: all(n.status()["reachability"]["status"] == "public" for n in nodes),
                             "every node public", 45, poll_s=0.5)
            s = others[0].status()
            r = s["reachability"]
            assert r["dialled_back"] >= 2 and r["text"].startswith(f"public ({r['dialled_back']} of {r['asked']} peers")
            assert "reachability    public (" in render_status(s)
            nursery.cancel_scope.cancel()


async def test_autonat_off_serves_nothing_and_status_shows_no_line(tmp_path, no_dns):
    import dataclasses

    cfg = node_config(tmp_path, 0)
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, autonat=False))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, cfg)
            s = node.status()
            assert s["reachability"] is None and "reachability" not in render_status(s)
            assert "/libp2p/autonat/1.0.0" not in node.p2p.host.get_mux().handlers
            nursery.cancel_scope.cancel()


def test_watch_with_an_unresolvable_bootstrap_exits_2_with_one_line(capsys, no_dns):
    rc = main(["watch", "--bootstrap", f"/dnsaddr/seed.invalid/p2p/{A}", "--listen", "/ip4/127.0.0.1/tcp/0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "seed.invalid" in err and "Traceback" not in err, err
