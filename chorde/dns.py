"""DNS-driven server lists, resolved with dnspython and refreshed on the records' TTL.

A server name may stand for several servers: every A/AAAA record of ``cache.example.com``
is one server on the given port, and a name starting with ``_``
(``_memcache._tcp.example.com``) is looked up as SRV records, each naming a target host and
its own port. :class:`DnsServerList` resolves a set of such names and tells its caller when
to ask again (the smallest record TTL, bounded by ``min_interval``/``max_interval``).

A failed lookup (timeout, no such name, no records) keeps the last addresses the name had,
or the name itself (resolved by the system when connecting) if it never resolved: a DNS
hiccup must not empty a cache cluster.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Sequence
from typing import Any

from chorde.errors import ConfigurationError, require

require("dns.resolver", "dns")
import dns.exception  # noqa: E402
import dns.nameserver  # noqa: E402
import dns.resolver  # noqa: E402

__all__ = ["DnsServerList", "lookup", "make_resolver"]

logger = logging.getLogger("chorde.dns")

Address = tuple[str, int]
_FAILED_RETRY = 30.0


def _parse_nameserver(spec: str) -> Any:
    host, port = spec, 53
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = int(port_text)
    ipaddress.ip_address(host)  # ValueError: a nameserver is an IP address
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return dns.nameserver.Do53Nameserver(host, port)


def make_resolver(nameservers: Sequence[str] | None = None, timeout: float = 1.0) -> Any:
    """A ``dns.resolver.Resolver`` asking ``nameservers`` (``"ip"`` or ``"ip:port"``).

    Without nameservers it reads the system configuration (``/etc/resolv.conf``).
    """
    if nameservers is None:
        resolver = dns.resolver.Resolver()
    else:
        if isinstance(nameservers, str) or not nameservers:
            raise ConfigurationError(f"nameservers must be a non-empty list, got {nameservers!r}")
        resolver = dns.resolver.Resolver(configure=False)
        try:
            resolver.nameservers = [_parse_nameserver(ns) for ns in nameservers]
        except ValueError as exc:
            raise ConfigurationError(f"bad nameservers {nameservers!r}: {exc}") from None
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


def _addresses(resolver: Any, host: str, port: int) -> tuple[list[Address], float]:
    found: list[Address] = []
    ttl = math.inf
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(host, rdtype)
        except dns.resolver.NoAnswer:
            continue
        found += [(r.address, port) for r in answer]
        ttl = min(ttl, answer.rrset.ttl)
    return found, ttl


def lookup(host: str, port: int, resolver: Any) -> tuple[list[Address], float]:
    """``([(ip, port), ...], ttl)`` for ``host``: SRV when it starts with ``_``, else A/AAAA.

    Raises ``dns.exception.DNSException`` when the name does not resolve.
    """
    if not host.startswith("_"):
        return _addresses(resolver, host, port)
    answer = resolver.resolve(host, "SRV")
    ttl: float = answer.rrset.ttl
    found: list[Address] = []
    for record in sorted(answer, key=lambda r: (r.priority, -r.weight)):
        target = record.target.to_text(omit_final_dot=True)
        try:
            addresses, target_ttl = _addresses(resolver, target, record.port)
        except dns.exception.DNSException as exc:
            logger.warning("chorde: SRV target %s of %s does not resolve: %s", target, host, exc)
            continue
        found += addresses
        ttl = min(ttl, target_ttl)
    return found, ttl


class DnsServerList:
    """Resolves ``(name, port)`` pairs to the servers they stand for; see the module doc."""

    def __init__(
        self,
        names: Sequence[Address],
        *,
        resolver: Any = None,
        nameservers: Sequence[str] | None = None,
        timeout: float = 1.0,
        min_interval: float = 1.0,
        max_interval: float = 300.0,
    ) -> None:
        if min_interval > max_interval:
            raise ConfigurationError(
                f"dns_min_interval ({min_interval!r}) exceeds dns_max_interval ({max_interval!r})"
            )
        self.names = list(names)
        self.min_interval = min_interval
        self.max_interval = max_interval
        self._last: dict[Address, list[Address]] = {}
        if resolver is None:
            try:
                resolver = make_resolver(nameservers, timeout)
            except dns.resolver.NoResolverConfiguration as exc:
                logger.warning("chorde: no DNS configuration (%s); names resolve statically", exc)
        self.resolver = resolver

    def resolve(self) -> tuple[list[Address], float]:
        """Resolve every name now: ``(addresses, seconds until the next refresh)``."""
        addresses: list[Address] = []
        ttl = math.inf
        for name in self.names:
            found: list[Address] = []
            if self.resolver is not None:
                try:
                    found, name_ttl = lookup(*name, self.resolver)
                except dns.exception.DNSException as exc:
                    logger.debug("chorde: DNS lookup of %s failed: %s", name[0], exc)
                else:
                    if found:
                        ttl = min(ttl, name_ttl)
            if found:
                self._last[name] = found
            else:
                found = self._last.get(name) or [name]
                ttl = min(ttl, _FAILED_RETRY)
            addresses += found
        return addresses, min(max(ttl, self.min_interval), self.max_interval)
