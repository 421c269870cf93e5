"""The servers of a memcached client: their connections, liveness, ring and discovery.

* :class:`Server`: one memcached server, with its connections (one per thread, one per event
  loop), whether it is down, and the namespace's generation record as last seen on it.
* :class:`ServerSet`: the consistent-hash ring over the servers (:mod:`chorde.hashring`), kept
  up to date from a discovery function on a schedule; a ring is swapped atomically, and a
  dropped server is closed only once no call can still be using it.
* :func:`dns_discovery`: the discovery of a list of ``host:port``, following DNS
  (:mod:`chorde.dns`) for names; ElastiCache's discovery is in
  :mod:`chorde.clients.elasticache`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from chorde.clients.memcached import aio, blocking
from chorde.clients.memcached.protocol import ReplyError
from chorde.errors import ConfigurationError
from chorde.hashring import HashRing
from chorde.serialization import RateLimitedLog

__all__ = [
    "DEFAULT_PORT",
    "Address",
    "Discovery",
    "Server",
    "ServerSet",
    "ServerSpec",
    "dns_discovery",
    "parse_server",
]

DEFAULT_PORT = 11211
ServerSpec = str | tuple[str, int]
Address = tuple[str, int]
#: A discovery function: ``(addresses, seconds until the next call)``; addresses None keeps
#: the current servers, seconds None means never again (a static list).
Discovery = Callable[[], tuple[list[Address] | None, float | None]]

logger = logging.getLogger("chorde.clients.memcached")

_GEN_SIZE = 8
_ZERO_GEN = bytes(_GEN_SIZE)


def parse_server(spec: ServerSpec) -> tuple[str, int]:
    """``"host:port"``, ``"host"``, ``"[v6]:port"`` or ``(host, port)`` to ``(host, port)``."""
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], str) or not isinstance(spec[1], int):
            raise ConfigurationError(f"server {spec!r} must be (host: str, port: int)")
        host, port = spec
    elif isinstance(spec, str):
        host, port_text = spec, ""
        if spec.startswith("["):
            host, _, rest = spec[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ConfigurationError(f"server {spec!r} is not host:port")
            port_text = rest[1:]
        elif spec.count(":") == 1:
            host, port_text = spec.split(":")
        try:
            port = int(port_text) if port_text else DEFAULT_PORT
        except ValueError:
            raise ConfigurationError(f"server {spec!r} has a bad port {port_text!r}") from None
    else:
        raise ConfigurationError(f"server {spec!r} must be a 'host:port' string or a tuple")
    if not host or not 0 < port < 65536:
        raise ConfigurationError(f"server {spec!r} needs a host and a port in 1..65535")
    return host, port


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")
    return True


def dns_discovery(
    specs: Sequence[Address],
    *,
    dns: bool | None,
    resolver: Any,
    nameservers: Sequence[str] | None,
    timeout: float,
    min_interval: float,
    max_interval: float,
) -> Discovery:
    """The discovery of ``specs``: IP addresses as they are, names resolved with dnspython
    and followed on their records' TTL (when ``dns`` is not False and dnspython is there;
    ``dns=True`` requires it), else left to the system resolver at connect time."""
    static: list[Address] = []
    names: list[Address] = []
    for host, port in specs:
        (static if _is_literal(host) else names).append((host, port))
    if names and dns is not False:
        dns_mod = None
        try:
            from chorde import dns as dns_mod
        except ImportError:
            if dns:
                raise
        if dns_mod is not None:
            server_list = dns_mod.DnsServerList(
                names,
                resolver=resolver,
                nameservers=nameservers,
                timeout=timeout,
                min_interval=min_interval,
                max_interval=max_interval,
            )

            def resolve() -> tuple[list[Address] | None, float | None]:
                addresses, interval = server_list.resolve()
                return [*static, *addresses], interval

            return resolve
    everything = static + names
    return lambda: (everything, None)


class _Guard:
    """A weak-referenceable token whose death closes a thread's connection."""

    __slots__ = ("__weakref__",)


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


class Server:
    """One memcached server: its connections, liveness and last seen generation record.

    Each thread gets its own blocking connection (one socket), so the client is thread-safe
    without a lock on the hot path; it is closed when the thread ends (or when the server is
    closed), not left to the garbage collector. Each event loop gets its own asyncio
    connection, closed when the loop goes away.

    A server that failed is down for ``retry_interval`` seconds: :meth:`usable` says no,
    except to the one caller that probes it once the interval is over.
    """

    __slots__ = (
        "_aconns",
        "_conns",
        "_conns_lock",
        "_local",
        "address",
        "connect_timeout",
        "dead_until",
        "gen",
        "horizon",
        "host",
        "log",
        "name",
        "port",
        "record",
        "retry_interval",
        "timeout",
    )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        timeout: float,
        retry_interval: float,
        log: RateLimitedLog,
    ) -> None:
        self.host = host
        self.port = port
        self.address = (host, port)
        self.name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.log = log
        self._local = threading.local()
        self._conns: weakref.WeakSet[blocking.Connection] = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        # Event loop -> its asyncio connection; an entry goes with its loop.
        self._aconns: weakref.WeakKeyDictionary[Any, aio.Connection] = weakref.WeakKeyDictionary()
        self.dead_until = 0.0
        # The namespace's generation record on this server, as last seen by the client: the
        # generation (8 bytes) and the purge horizon (entries that expired before it are gone).
        self.record: bytes | None = None
        self.gen = _ZERO_GEN
        self.horizon = 0.0

    # ---- connections -------------------------------------------------------------------

    def conn(self) -> blocking.Connection:
        """This thread's connection to the server."""
        local = self._local
        try:
            return local.conn
        except AttributeError:
            conn = local.conn = blocking.Connection(
                self.address, self.connect_timeout, self.timeout
            )
            # The thread's locals go when the thread ends (or this server is dropped), and
            # the guard with them: its finalizer then closes the connection, which would
            # otherwise be left to the garbage collector, unclosed.
            local.guard = guard = _Guard()
            weakref.finalize(guard, _close_quietly, conn)
            with self._conns_lock:
                self._conns.add(conn)
            return conn

    def aconn(self, loop: asyncio.AbstractEventLoop) -> aio.Connection:
        """This event loop's connection to the server."""
        conn = self._aconns.get(loop)
        if conn is None:
            with self._conns_lock:
                conn = self._aconns.get(loop)
                if conn is None:
                    conn = self._aconns[loop] = aio.Connection(
                        self.address, self.connect_timeout, self.timeout
                    )
                    # Closed when the loop goes away (the connection never refers to it).
                    weakref.finalize(loop, conn.close)
        return conn

    def close(self) -> None:
        """Close every thread's and event loop's connection (a later call reconnects)."""
        with self._conns_lock:
            conns = list(self._conns)
            aconns = list(self._aconns.items())
        for conn in conns:
            _close_quietly(conn)
        for loop, aconn in aconns:
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile
                if loop.is_running() and not aio.runs_in(loop):
                    loop.call_soon_threadsafe(aconn.close)
                    continue
            aconn.close()

    # ---- liveness ----------------------------------------------------------------------

    def usable(self) -> bool:
        """False while the server is down, except for the one caller that probes it again."""
        dead_until = self.dead_until
        if not dead_until:
            return True
        now = time.monotonic()
        if now < dead_until:
            return False
        # Let one caller probe the server; the others keep treating it as dead meanwhile.
        self.dead_until = now + self.retry_interval
        return True

    def failed(self, exc: BaseException, what: str) -> None:
        """Note that ``what`` failed with ``exc``: down for a while unless the server answered.

        Socket errors, timeouts and anything unexpected mark it down; an error reply (the
        server answered, see :class:`~.protocol.ReplyError`) is only logged.
        """
        if isinstance(exc, OSError) or not isinstance(exc, ReplyError):
            self.dead_until = time.monotonic() + self.retry_interval
            self.log.warning(
                "chorde: memcached %s failed during %s (%s: %s); treating it as down for %.1f s",
                self.name,
                what,
                type(exc).__name__,
                exc,
                self.retry_interval,
                kind=f"down {self.name}",
            )
        else:
            self.log.warning(
                "chorde: memcached %s refused %s: %s: %s",
                self.name,
                what,
                type(exc).__name__,
                exc,
                kind=f"refused {self.name}",
            )

    def back(self) -> None:
        """Note that the server answered: no longer down."""
        if self.dead_until:
            self.dead_until = 0.0
            logger.info("chorde: memcached %s is back", self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<memcached {self.name}>"


class ServerSet:
    """The ring of a client's servers, following a :data:`Discovery` function.

    :meth:`start` asks ``discover`` for the first list; while it answers with a next
    interval, a daemon thread asks again after it. The ring (:attr:`ring`) is replaced as a
    whole, so a caller that picked a server keeps a consistent view; servers already known
    keep their connections.
    """

    def __init__(
        self,
        discover: Discovery,
        *,
        connect_timeout: float,
        timeout: float,
        retry_interval: float,
        points_per_node: int,
        log: RateLimitedLog,
    ) -> None:
        self._discover = discover
        self._options = {
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "retry_interval": retry_interval,
            "log": log,
        }
        # A dropped server is closed once any call it could still be serving has timed out.
        self._grace = 2 * (connect_timeout + timeout) + 1.0
        self._by_address: dict[Address, Server] = {}
        # Servers dropped from the ring, with when: closed once no call can still be on them.
        self._retired: list[tuple[float, Server]] = []
        self.ring: HashRing[Server] = HashRing(points_per_node=points_per_node)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Build the first ring and start the refresher thread if the list can change."""
        interval = self.refresh()
        if interval is not None:
            self._thread = threading.Thread(
                target=self._refresh_loop,
                args=(interval,),
                name=f"chorde-memcached-refresh-{id(self):x}",
                daemon=True,
            )
            self._thread.start()

    def refresh(self) -> float | None:
        """Ask the discovery now and update the ring; return seconds to the next refresh."""
        addresses, interval = self._discover()
        if addresses is not None:
            self.set(addresses)
        return interval

    def _refresh_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                next_interval = self.refresh()
            except Exception:  # never let the refresher die
                logger.exception("chorde: refreshing the memcached server list failed")
                next_interval = None
            if next_interval is not None:
                interval = next_interval

    def set(self, addresses: Iterable[Address]) -> None:
        """Swap in a ring over ``addresses``, reusing the servers already known."""
        with self._lock:
            wanted = list(dict.fromkeys(addresses))
            if not wanted and self._by_address:
                # An empty answer is far likelier a glitch than a cluster without nodes.
                return
            if set(wanted) == set(self._by_address) and self.ring:
                return
            known = self._by_address
            servers = {a: known.get(a) or Server(*a, **self._options) for a in wanted}
            # A caller may have picked a server from the old ring just before the swap.
            now = time.monotonic()
            keep = []
            for retired_at, old in self._retired:
                if now - retired_at > self._grace:
                    old.close()
                else:
                    keep.append((retired_at, old))
            dropped = [s for a, s in known.items() if a not in servers]
            self._retired = keep + [(now, s) for s in dropped]
            self._by_address = servers
            self.ring = self.ring.with_nodes(servers.values())
            if dropped or len(servers) > 1:
                logger.info(
                    "chorde: memcached servers now %s", ", ".join(map(str, servers.values()))
                )

    def __getitem__(self, address: Address) -> Server:
        return self._by_address[address]

    @property
    def names(self) -> list[str]:
        """The servers on the ring, as ``host:port``."""
        return [s.name for s in self.ring.nodes]

    def close(self) -> None:
        """Stop the refresher thread and close every connection."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            for server in [*self._by_address.values(), *(s for _, s in self._retired)]:
                server.close()
            self._retired = []
