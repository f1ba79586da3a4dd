"""Bootstrap addresses by name, resolved once at start.

- ``/dns4/HOST/tcp/P/p2p/ID`` -> A records, ``/dns6/...`` -> AAAA, ``/dns/...`` -> both, through the
  system resolver (getaddrinfo, so /etc/hosts and ``localhost`` work without DNS traffic);
- ``/dnsaddr/HOST[/p2p/ID]`` -> the TXT records of ``_dnsaddr.HOST``, each ``dnsaddr=/...`` a
  multiaddr (the libp2p dnsaddr spec), which may itself be a /dnsaddr or /dns4 address (followed to
  ``MAX_DEPTH``); with a /p2p/ID only the records ending in that id are kept.

A name that does not resolve stops the node with one line (a ``ConfigError``, exit 2): a
bootstrap list that silently shrinks to nothing would leave the node alone with no hint why. Names
under the ``.invalid`` TLD are refused here without a query (RFC 6761 section 6.4 lets resolvers
do that), which is what lets the tests exercise this path with no network.

The TXT lookup is injectable (``txt=``): the tests give a fake one, since no DNS query may leave the
test machine.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable

import multiaddr
import structlog
import trio

from gaia_p2p import logs
from gaia_p2p.errors import ConfigError

log = structlog.get_logger("gaia.dns")

TxtResolver = Callable[[str], Awaitable[list[str]]]

MAX_DEPTH = 3  # dnsaddr records pointing at dnsaddr records: followed this deep at most
MAX_ADDRS = 32  # addresses one bootstrap entry may resolve to at most (the first ones are kept)
MAX_TXT_RECORDS = 64  # TXT records of one name looked at at most
RESOLVE_TIMEOUT_S = 10.0


class NameNotResolved(ConfigError):
    pass


def is_invalid_name(host: str) -> bool:
    """RFC 6761 6.4: names under .invalid never resolve; answer that without asking anyone."""
    return host.rstrip(".").lower().rsplit(".", 1)[-1] == "invalid"


async def system_txt(name: str) -> list[str]:
    """TXT records of ``name`` through dnspython (the system's configured nameservers)."""
    import dns.exception
    import dns.resolver

    def lookup() -> list[str]:
        try:
            answer = dns.resolver.resolve(name, "TXT", lifetime=RESOLVE_TIMEOUT_S / 2)
        except dns.resolver.NXDOMAIN:
            raise LookupError("no such name") from None
        except dns.resolver.NoAnswer:
            return []
        except dns.exception.DNSException as e:
            raise LookupError(type(e).__name__) from None
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    return await trio.to_thread.run_sync(lookup, abandon_on_cancel=True)


async def _getaddrinfo(host: str, family: int) -> list[str]:
    if is_invalid_name(host):
        raise LookupError("a name under .invalid never resolves (RFC 6761)")
    try:
        infos = await trio.socket.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise LookupError(e.strerror or str(e)) from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _fail(label: str, addr: str, why: str) -> NameNotResolved:
    return NameNotResolved(f"config error: {label} = {addr!r} does not resolve ({why}); check the name, or "
                           f"give the bootstrap as /ip4/ADDRESS/tcp/PORT/p2p/PEER_ID")


async def resolve_addr(addr: str, *, txt: TxtResolver = system_txt, depth: int = 0,
                       label: str = "network.bootstrap") -> list[str]:
    """The /ip4 and /ip6 addresses ``addr`` stands for (itself if it is one); NameNotResolved if none."""
    ma = multiaddr.Multiaddr(addr)
    protos = [p.name for p in ma.protocols()]
    first = protos[0]
    if first in ("ip4", "ip6"):
        return [addr]
    host = str(ma.value_for_protocol(first))
    rest = addr[len(f"/{first}/{host}"):]  # /tcp/P/p2p/ID, or /p2p/ID for dnsaddr
    try:
        if first in ("dns4", "dns6", "dns"):
            out: list[str] = []
            families = {"dns4": [(socket.AF_INET, "ip4")], "dns6": [(socket.AF_INET6, "ip6")],
                        "dns": [(socket.AF_INET, "ip4"), (socket.AF_INET6, "ip6")]}[first]
            errors = []
            for family, name in families:
                try:
                    out.extend(f"/{name}/{ip.split('%', 1)[0]}{rest}" for ip in await _getaddrinfo(host, family))
                except LookupError as e:
                    errors.append(str(e))
            if not out:
                raise LookupError("; ".join(errors) or "no address")
            return out[:MAX_ADDRS]
        if first == "dnsaddr":
            return await _dnsaddr(addr, host, ma, txt=txt, depth=depth, label=label)
    except LookupError as e:
        raise _fail(label, addr, str(e)) from None
    raise _fail(label, addr, f"/{first} is not a name this node resolves")


async def _dnsaddr(addr: str, host: str, ma: multiaddr.Multiaddr, *, txt: TxtResolver, depth: int,
                   label: str) -> list[str]:
    if depth >= MAX_DEPTH:
        raise LookupError(f"dnsaddr records nest deeper than {MAX_DEPTH}")
    if is_invalid_name(host):
        raise LookupError("a name under .invalid never resolves (RFC 6761)")
    try:
        want = str(ma.value_for_protocol("p2p"))
    except Exception:
        want = None
    records = (await txt(f"_dnsaddr.{host}"))[:MAX_TXT_RECORDS]
    out: list[str] = []
    skipped = 0
    for record in records:
        if not record.startswith("dnsaddr="):
            continue  # other TXT records may share the name
        target = record[len("dnsaddr="):].strip()
        try:
            tma = multiaddr.Multiaddr(target)
            tid = str(tma.value_for_protocol("p2p"))
        except Exception:
            skipped += 1  # a bad record is the zone's problem, not a reason to stop: skip it, say so
            continue
        if want is not None and tid != want:
            continue
        try:
            out.extend(await resolve_addr(target, txt=txt, depth=depth + 1, label=label))
        except NameNotResolved:
            skipped += 1
        if len(out) >= MAX_ADDRS:
            break
    if skipped:
        log.warning("dnsaddr_records_skipped", name=host, skipped=skipped)
    if not out:
        raise LookupError(f"no usable dnsaddr=... TXT record at _dnsaddr.{host}"
                          + (f" for peer {want}" if want else ""))
    return out[:MAX_ADDRS]


async def resolve_bootstrap(addrs: Iterable[str], *, txt: TxtResolver = system_txt,
                            timeout_s: float = RESOLVE_TIMEOUT_S) -> tuple[str, ...]:
    """Every bootstrap address with names replaced by what they resolve to (order kept, no duplicates)."""
    out: list[str] = []
    for addr in addrs:
        if addr.startswith(("/ip4/", "/ip6/")):
            out.append(addr)
            continue
        try:
            with trio.fail_after(timeout_s):
                resolved = await resolve_addr(addr, txt=txt)
        except trio.TooSlowError:
            raise _fail("network.bootstrap", addr, f"no answer within {timeout_s:g} s") from None
        log.info(logs.BOOTSTRAP_RESOLVED, name=addr, addrs=resolved)
        out.extend(resolved)
    return tuple(dict.fromkeys(out))
