"""The servers of a memcached client: their connections, liveness, ring and discovery.

* :class:`Server`: one memcached server, with its connections (one per thread, a pool per
  event loop), whether it is down, what could not be written to it while it was (its
  :class:`WriteLog`, undone before it is used again) and the namespace's generation record
  as last seen on it.
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
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from chorde.clients.memcached import aio, blocking
from chorde.clients.memcached.calls import IO
from chorde.clients.memcached.protocol import VERSION_REQUEST, Reply, ReplyError, Version
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
    "WriteLog",
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


class WriteLog:
    """What could not be written to a server while it was unreachable, to undo once it is
    back: keys to delete, a generation to renew (``clear``), a purge horizon to apply."""

    __slots__ = ("clear", "horizon", "keys")

    def __init__(self) -> None:
        self.keys: dict[bytes, None] = {}
        self.clear = False
        self.horizon = 0.0

    def __bool__(self) -> bool:
        return bool(self.keys) or self.clear or bool(self.horizon)

    def __repr__(self) -> str:
        return f"<WriteLog {len(self.keys)} keys, clear={self.clear}, horizon={self.horizon}>"


#: A server's view of the namespace's generation record: ``(record as read, generation,
#: serializer bound to it, purge horizon, what a get reply ends with when the record is
#: unchanged)``; this one until the record is read and trusted.
UNKNOWN_STATE: tuple[Any, None, None, float, None] = (object(), None, None, 0.0, None)

#: Orphaned writes kept per server (see :meth:`Server.orphan`); beyond, the oldest is closed.
_MAX_ORPHANS = 256
#: The shortest pause between two probes of a down server.
_MIN_PROBE_INTERVAL = 0.01

#: ``replay(server, log)``: the operation that undoes ``log`` on ``server`` (see
#: :meth:`Server.failed`); it raises if the server fails meanwhile.
Replay = Callable[["Server", WriteLog], Any]


def _no_replay(server: Server, log: WriteLog) -> Any:
    """The replay of a server nobody writes through: nothing but a probe."""
    return _ping(server)


class Server:
    """One memcached server: its connections, whether it is down, what must be undone there
    before it is used again, and the namespace's generation record as last seen on it.

    Each thread gets its own blocking connection (one socket), so the client is thread-safe
    without a lock on the hot path; it is closed when the thread ends (or when the server is
    closed), not left to the garbage collector. Each event loop gets its own pool of asyncio
    connections (at most ``pool_size``), closed when the loop goes away.

    Down-marking: a server is *down* after a request to it timed out, or failed again on a
    new connection (see :mod:`.transport`: one lost connect or one socket from before a
    restart is retried first). While it is down its keys are misses, and writes to it are
    not sent but remembered in its :class:`WriteLog` (keys, at most ``write_log_size`` of
    them; past that, the whole namespace there). A thread of its own probes it every
    ``retry_interval`` seconds; once it answers, the probe waits for the replies of writes
    that were in flight when it went down (orphans), replays the log (the keys are deleted,
    or the generation renewed) and only then is the server *up* again.
    """

    __slots__ = (
        "_aconns",
        "_closed",
        "_conns",
        "_conns_lock",
        "_local",
        "_lock",
        "_lost",
        "_orphans",
        "_prober",
        "_replay",
        "address",
        "connect_timeout",
        "down",
        "host",
        "log",
        "meta",
        "name",
        "pool_size",
        "port",
        "retries",
        "retry_interval",
        "seen",
        "state",
        "timeout",
        "write_log_size",
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
        connect_retries: int = 1,
        pool_size: int = 8,
        write_log_size: int = 10_000,
        replay: Replay = _no_replay,
    ) -> None:
        self.host = host
        self.port = port
        self.address = (host, port)
        self.name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.retries = connect_retries
        self.pool_size = pool_size
        self.write_log_size = write_log_size
        self.log = log
        self._replay = replay
        self._local = threading.local()
        self._conns: weakref.WeakSet[blocking.Connection] = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        # Event loop -> its pool; an entry goes with its loop.
        self._aconns: weakref.WeakKeyDictionary[Any, aio.Pool] = weakref.WeakKeyDictionary()
        #: True while the server is down (read on every call: a plain attribute).
        self.down = False
        # Down-marking, the write log, orphans and the prober change under this lock.
        self._lock = threading.Lock()
        self._lost = WriteLog()
        self._orphans: list[tuple[socket.socket, Reply]] = []
        self._prober: threading.Thread | None = None
        self._closed = threading.Event()
        #: See UNKNOWN_STATE; replaced as a whole, so a reader sees one consistent tuple.
        self.state: tuple[Any, bytes | None, Any, float, Any] = UNKNOWN_STATE
        #: When the newest generation record trusted here was made: an older one showing up
        #: later (replayed) is not trusted.
        self.seen = 0.0
        #: Whether the server speaks the meta commands: None until a client asked it (``mn``).
        self.meta: bool | None = None

    # ---- connections -------------------------------------------------------------------

    def conn(self) -> blocking.Connection:
        """This thread's connection to the server."""
        local = self._local
        try:
            return local.conn
        except AttributeError:
            conn = local.conn = blocking.Connection(
                self.address, self.connect_timeout, self.timeout, self.retries, self
            )
            # The thread's locals go when the thread ends (or this server is dropped), and
            # the guard with them: its finalizer then closes the connection, which would
            # otherwise be left to the garbage collector, unclosed.
            local.guard = guard = _Guard()
            weakref.finalize(guard, _close_quietly, conn)
            with self._conns_lock:
                self._conns.add(conn)
            return conn

    def aconn(self, loop: asyncio.AbstractEventLoop) -> aio.Pool:
        """This event loop's pool of connections to the server."""
        pool = self._aconns.get(loop)
        if pool is None:
            with self._conns_lock:
                pool = self._aconns.get(loop)
                if pool is None:
                    pool = self._aconns[loop] = aio.Pool(
                        self.address,
                        self.connect_timeout,
                        self.timeout,
                        size=self.pool_size,
                        retries=self.retries,
                        owner=self,
                    )
                    # Closed when the loop goes away (the pool never refers to it).
                    weakref.finalize(loop, pool.close)
        return pool

    def close(self) -> None:
        """Close every thread's and event loop's connection (a later call reconnects) and
        stop probing."""
        self._closed.set()
        with self._conns_lock:
            conns = list(self._conns)
            aconns = list(self._aconns.items())
        with self._lock:
            orphans, self._orphans = self._orphans, []
        for conn in conns:
            _close_quietly(conn)
        for sock, _ in orphans:
            sock.close()
        for loop, pool in aconns:
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile
                if loop.is_running() and not aio.runs_in(loop):
                    loop.call_soon_threadsafe(pool.close)
                    continue
            pool.close()

    # ---- faults, the write log and recovery ----------------------------------------------

    def missed(
        self, keys: Iterable[bytes] = (), *, clear: bool = False, horizon: float = 0.0
    ) -> bool:
        """A write was not sent because the server is down: remember it (True). False if
        the server came back meanwhile: then the write should be made after all."""
        with self._lock:
            if not self.down:
                return False
            self._remember(keys, clear, horizon)
            return True

    def failed(
        self,
        exc: BaseException,
        what: str,
        keys: Iterable[bytes] = (),
        *,
        clear: bool = False,
        horizon: float = 0.0,
    ) -> None:
        """Note that ``what`` failed with ``exc``; ``keys`` (``clear``, ``horizon``) are what
        it may have left unwritten.

        An error reply (the server answered, see :class:`~.protocol.ReplyError`) is only
        logged. Anything else (socket errors, timeouts: the transports already retried what
        was worth it) marks the server down and remembers what was not written.
        """
        if isinstance(exc, ReplyError) and not isinstance(exc, OSError):
            self.log.warning(
                "chorde: memcached %s refused %s: %s: %s",
                self.name,
                what,
                type(exc).__name__,
                str(exc),  # (not the exception: a kept record would keep its frames)
                kind=f"refused {self.name}",
            )
            return
        with self._lock:
            self._remember(keys, clear, horizon)
            self._mark_down()
        self.log.warning(
            "chorde: memcached %s failed during %s (%s: %s); treating it as down, probing it "
            "every %.2g s",
            self.name,
            what,
            type(exc).__name__,
            str(exc),
            self.retry_interval,
            kind=f"down {self.name}",
        )

    def connected(self) -> None:
        """A connection to the server was opened: it may have restarted since the client last
        read its generation record, so the record is read again before it is relied on (and
        a server that had no meta commands is asked again: it may have been upgraded; one
        that had them and lost them answers ``ERROR``, which the client notes)."""
        self.state = UNKNOWN_STATE
        if self.meta is False:
            self.meta = None

    def orphan(self, sock: socket.socket, reply: Reply) -> None:
        """Keep the socket of a write that timed out until the server has answered it (see
        :mod:`.transport`): the probe waits for it before the log is replayed. Past
        ``_MAX_ORPHANS``, the oldest is closed and the generation will be renewed instead."""
        with self._lock:
            self._orphans.append((sock, reply))
            if len(self._orphans) <= _MAX_ORPHANS:
                return
            oldest, _ = self._orphans.pop(0)
            self._lost.clear = True
        oldest.close()

    def _remember(self, keys: Iterable[bytes], clear: bool, horizon: float) -> None:
        lost = self._lost
        if horizon > lost.horizon:
            lost.horizon = horizon
        if clear:
            lost.clear = True
        if lost.clear:
            lost.keys.clear()  # the new generation drops every key anyway
            return
        lost.keys.update(dict.fromkeys(keys))
        if len(lost.keys) > self.write_log_size:
            lost.keys.clear()
            lost.clear = True
            self.log.warning(
                "chorde: memcached %s: more than %d writes failed while it was down; its "
                "namespace's entries there will be dropped when it is back (write_log_size)",
                self.name,
                self.write_log_size,
                kind=f"overflow {self.name}",
            )

    def _mark_down(self) -> None:
        self.down = True
        if self._prober is None and not self._closed.is_set():
            self._prober = threading.Thread(
                target=self._probe, name=f"chorde-memcached-probe-{self.name}", daemon=True
            )
            self._prober.start()

    def _probe(self) -> None:
        """The prober thread: until the server is up again or closed, every
        ``retry_interval``: probe it, settle its orphans, replay its write log."""
        interval = max(self.retry_interval, _MIN_PROBE_INTERVAL)
        try:
            while not self._closed.wait(interval):
                # (No connection of its own is kept between attempts.)
                _close_quietly(self.conn())
                try:
                    blocking.run(_ping(self))
                except Exception:
                    continue
                try:
                    with self._lock:
                        orphans, self._orphans = self._orphans, []
                    if not blocking.drain(orphans, time.monotonic() + self.timeout):
                        with self._lock:
                            self._remember((), True, 0.0)  # a late write may still land
                    if self._recover():
                        logger.info("chorde: memcached %s is back", self.name)
                        return
                except Exception:  # never let the prober die with the server down
                    logger.exception("chorde: recovering memcached %s failed", self.name)
        finally:
            with self._lock:
                self._prober = None
                if self.down and not self._closed.is_set():
                    self._mark_down()  # went down again as this prober was leaving

    def _recover(self) -> bool:
        """Replay the write log; True once it is empty and the server is up again."""
        while True:
            with self._lock:
                log, self._lost = self._lost, WriteLog()
            try:
                blocking.run(self._replay(self, log))
            except Exception as exc:
                with self._lock:
                    newer, self._lost = self._lost, log
                    self._remember(newer.keys, newer.clear, newer.horizon)
                self.log.warning(
                    "chorde: memcached %s answers but replaying its write log failed (%s: %s)",
                    self.name,
                    type(exc).__name__,
                    str(exc),
                    kind=f"replay {self.name}",
                )
                return False
            if log:
                logger.info("chorde: memcached %s: undid %r", self.name, log)
            with self._lock:
                if self._orphans:
                    return False  # writes timed out meanwhile: settle them first
                if not self._lost:
                    self.down = False
                    return True

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<memcached {self.name}>"


def _ping(server: Server) -> Any:
    """The probe: one request the server must answer (nothing is written)."""
    yield (IO, server, VERSION_REQUEST, Version())


class ServerSet:
    """The ring of a client's servers, following a :data:`Discovery` function; ``options``
    are those of each :class:`Server`.

    :meth:`start` asks ``discover`` for the first list; while it answers with a next
    interval, a daemon thread asks again after it. The ring (:attr:`ring`) is replaced as a
    whole, so a caller that picked a server keeps a consistent view; servers already known
    keep their connections.
    """

    def __init__(self, discover: Discovery, *, points_per_node: int, **options: Any) -> None:
        self._discover = discover
        # Every Server's options (connect_timeout, timeout, retry_interval, log ...).
        self._options = options
        # A dropped server is closed once any call it could still be serving has timed out.
        self._grace = 2 * (options["connect_timeout"] + options["timeout"]) + 1.0
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
