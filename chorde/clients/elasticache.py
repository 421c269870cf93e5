"""ElastiCacheClient: a MemcachedClient whose servers come from ElastiCache auto discovery.

An ElastiCache (memcached) cluster has a *configuration endpoint* that answers the
``config get cluster`` command (engines before 1.4.14: ``get AmazonElastiCache:cluster``)
with a configuration version and the list of nodes::

    CONFIG cluster 0 <bytes>\\r\\n
    <version>\\n
    <host>|<ip>|<port> <host>|<ip>|<port> ...\\n
    \\r\\n
    END\\r\\n

The client polls it every ``poll_interval`` seconds and rebuilds its consistent-hash ring
when the version changes, so adding or removing nodes moves about 1/N of the keys. Until the
first successful discovery the endpoint itself is used as the only node (it is one of the
cluster's nodes); a failed poll keeps the last known nodes.

Usage::

    from chorde.clients.elasticache import ElastiCacheClient

    c = ElastiCacheClient("mycluster.abc123.cfg.use1.cache.amazonaws.com:11211",
                          checksum_key="a secret shared by your app")
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from chorde.clients.base import check_ttl
from chorde.clients.memcached import MemcachedClient, ServerSpec, parse_server
from chorde.errors import ChordeError, ConfigurationError

__all__ = [
    "ClusterConfig",
    "DiscoveryError",
    "ElastiCacheClient",
    "fetch_cluster_config",
    "parse_cluster_config",
]

logger = logging.getLogger("chorde.clients.elasticache")

_MAX_REPLY = 1024 * 1024
ClusterConfig = tuple[int, list[tuple[str, int]]]


class DiscoveryError(ChordeError):
    """The configuration endpoint gave no usable answer."""


def parse_cluster_config(body: bytes) -> ClusterConfig:
    """``(version, [(address, port), ...])`` from the body of a cluster config reply.

    A node's IP is preferred to its host name (no extra lookup); nodes without an IP use
    the host name.
    """
    lines = body.decode("ascii", "replace").split("\n")
    if len(lines) < 2:
        raise DiscoveryError(f"cluster config has no node list: {body[:200]!r}")
    try:
        version = int(lines[0].strip())
    except ValueError:
        raise DiscoveryError(f"bad cluster config version {lines[0][:50]!r}") from None
    nodes = []
    for node in lines[1].split():
        parts = node.split("|")
        if len(parts) != 3:
            raise DiscoveryError(f"bad node {node[:100]!r} in cluster config")
        host, ip, port = parts
        try:
            nodes.append(parse_server((ip or host, int(port))))
        except ValueError as exc:
            raise DiscoveryError(f"bad node {node[:100]!r} in cluster config: {exc}") from None
    if not nodes:
        raise DiscoveryError("cluster config lists no nodes")
    return version, nodes


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not (data.endswith(b"END\r\n") or (data.startswith(b"ERROR") and data.endswith(b"\r\n"))):
        chunk = sock.recv(65536)
        if not chunk:
            raise DiscoveryError("configuration endpoint closed the connection")
        data += chunk
        if len(data) > _MAX_REPLY:
            raise DiscoveryError("configuration reply too long")
    return data


def _extract_body(reply: bytes) -> bytes | None:
    """The payload of a ``CONFIG``/``VALUE`` reply, or None for ``ERROR``/empty."""
    head, sep, rest = reply.partition(b"\r\n")
    fields = head.split()
    if not sep or not fields or fields[0] in (b"ERROR", b"END"):
        return None
    if fields[0] not in (b"CONFIG", b"VALUE") or len(fields) < 4:
        raise DiscoveryError(f"unexpected configuration reply {head[:100]!r}")
    size = int(fields[3])
    if len(rest) < size:
        raise DiscoveryError("truncated configuration reply")
    return rest[:size]


def fetch_cluster_config(address: tuple[str, int], timeout: float) -> ClusterConfig:
    """Ask the configuration endpoint at ``address`` for the cluster's nodes."""
    with socket.create_connection(address, timeout=timeout) as sock:
        for command in (b"config get cluster\r\n", b"get AmazonElastiCache:cluster\r\n"):
            sock.sendall(command)
            body = _extract_body(_read_reply(sock))
            if body is not None:
                return parse_cluster_config(body)
    raise DiscoveryError("the endpoint does not speak ElastiCache auto discovery")


class ElastiCacheClient(MemcachedClient):
    """A :class:`MemcachedClient` over the nodes of an ElastiCache cluster, kept up to date.

    ``config_endpoint`` is the cluster's configuration endpoint (``host:port``);
    ``poll_interval`` (default 60 s) is how often it is asked for the node list. Every other
    option is a :class:`MemcachedClient` option.
    """

    def __init__(
        self,
        config_endpoint: ServerSpec,
        checksum_key: Any = None,
        *,
        poll_interval: float = 60.0,
        **options: Any,
    ) -> None:
        if isinstance(config_endpoint, list):  # chorde 1.x took a list of addresses
            if len(config_endpoint) != 1:
                raise ConfigurationError(
                    "ElastiCacheClient takes one cluster's configuration endpoint, got "
                    f"{config_endpoint!r}: make one client per cluster"
                )
            config_endpoint = config_endpoint[0]
        self.config_endpoint = parse_server(config_endpoint)
        self.poll_interval = float(check_ttl(poll_interval, "poll_interval"))
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        #: The configuration version in use, None before the first successful discovery.
        self.config_version: int | None = None
        options["dns"] = False  # the endpoint's answer, not DNS, lists the nodes
        super().__init__([config_endpoint], checksum_key, **options)

    def _discover(self) -> tuple[list[tuple[str, int]] | None, float | None]:
        """The cluster's nodes when its configuration version changed (None: keep them)."""
        try:
            version, nodes = fetch_cluster_config(
                self.config_endpoint, max(self.connect_timeout, self.timeout)
            )
        except (OSError, ValueError, DiscoveryError) as exc:
            self._log.warning(
                "chorde: ElastiCache discovery at %s:%d failed (%s: %s); keeping %s",
                *self.config_endpoint,
                type(exc).__name__,
                exc,
                "the known nodes" if self.config_version is not None else "the endpoint",
                kind="elasticache discovery",
            )
            # Until a discovery works, the endpoint (one of the nodes) is the only one.
            keep = None if self.config_version is not None else [self.config_endpoint]
            return keep, self.poll_interval
        if version == self.config_version:
            return None, self.poll_interval
        logger.info("chorde: ElastiCache cluster config version %d: %d nodes", version, len(nodes))
        self.config_version = version
        return nodes, self.poll_interval


if not TYPE_CHECKING:  # (type checkers keep flagging unknown names)

    def __getattr__(name: str) -> Any:
        # chorde 1.x's names here: what replaced them (see chorde._legacy).
        from chorde import _legacy

        return _legacy.attribute(__name__, name)
