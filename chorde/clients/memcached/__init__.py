"""A memcached client on pymemcache: consistent hashing, any key, any value size, signed values.

Usage::

    from chorde.clients.memcached import MemcachedClient

    c = MemcachedClient(["localhost:11211"], checksum_key="a secret shared by your app")
    c.put(3, 10, 300)
    assert c.get(3) == 10

How entries are stored
    * Keys go through :func:`chorde.keys.memcache_key`: short printable keys are used as they
      are (after ``namespace``), anything else becomes a digest. The full encoded key is
      signed into the value and compared on read, so a digest collision is a miss.
    * Values are pickled, optionally compressed and HMAC-signed by
      :class:`chorde.serialization.Serializer`; they are verified before unpickling, so
      whoever can write to the memcached cannot make this process run code. A payload that
      fails verification is a miss, counted in ``stats.errors``.
    * Every entry carries its own absolute expiry (wall clock), so :meth:`getTtl` returns a
      float ``ttl_left`` and :meth:`expire` can mark an entry stale while keeping it. The
      server-side expiry is set ``stale_grace`` seconds (default 60) beyond the logical one so
      stale entries stay readable by ``getTtl`` for that long (stale-while-revalidate).
      Processes must have roughly synchronised clocks.
    * Values larger than ``max_item_size`` are paged (see :mod:`chorde.clients._pages`).

Servers
    Keys are spread over the servers by a consistent-hash ring (:mod:`chorde.hashring`):
    adding or removing one of N servers remaps about 1/N of the keys. A server given by DNS
    name is resolved with dnspython and re-resolved on the record TTL (bounded by
    ``dns_min_interval``/``dns_max_interval``); it may yield several A/AAAA records, or SRV
    records when the name starts with ``_`` (``_memcache._tcp.example.com``). The ring is
    swapped atomically, so in-flight calls finish against the servers they started with.
    Each thread talks to each server over its own pymemcache ``Client`` (one socket), so the
    client is thread-safe without a lock on the hot path; reads use a single-loop parser on
    that socket (:func:`_get_many`), writes use pymemcache's commands.

Asyncio
    The awaitable methods (``aget``, ``agetTtl``, ``agetMulti``, ``aput``, ``aadd``,
    ``adelete``, ``arenew``, ``aexpire``, ``aupdate``, ``aclear``...) are native: each event
    loop gets its own connection per server, speaking the memcached text protocol through the
    loop's non-blocking socket calls, so no call ever blocks the loop or goes through an executor
    (``apurge`` and ``aclose``, rare and administrative, still do). Same keys, payloads,
    paging, generations and fault handling as the blocking methods; a loop's connection is
    closed when the loop goes away.

Faults
    A server that refuses, resets or times out (``connect_timeout``/``timeout``, 0.5 s and
    1 s by default) is marked dead for ``retry_interval`` seconds (default 5): its keys are
    misses and writes to it are dropped, counted in ``stats.errors`` and logged at most once
    a minute. After the interval one caller probes it again; on success it is used again.
    Keys of a dead server are *not* moved to other servers, which would serve stale data
    once it came back.

``clear()``
    ``flush_all`` would wipe every application sharing the servers, so ``clear()`` instead
    writes a new random *generation* to each server under a ``namespace``-scoped key. Every
    entry carries the generation it was written in, and every read fetches the server's
    generation in the same round trip, so a clear is seen at once by every client of the
    namespace, on every host. Entries of old generations age out or are evicted by memcached.
    Writes made by another client that had not yet seen the new generation are lost (read as
    misses), which a cache can afford.

Atomicity
    :meth:`add` maps to memcached ``add`` (falling back to ``gets``/``cas`` when the key holds
    only a stale entry); :meth:`renew` and :meth:`expire` are ``gets``/``cas`` loops, so they
    never overwrite a concurrent ``put`` (they retry, a bounded number of times), and so is
    :meth:`update` (``aupdate``), a read-modify-write that loses no concurrent update.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import ipaddress
import logging
import math
import os
import random
import re
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from chorde.clients._pages import PageManifest, assemble, make_pages, page_keys_from_flags
from chorde.clients.base import BaseCacheClient, CacheStats, Key, check_ttl
from chorde.errors import CacheMissError, ConfigurationError, require
from chorde.hashring import HashRing
from chorde.keys import memcache_key
from chorde.sentinel import NONE
from chorde.serialization import InvalidPayload, RateLimitedLog, Serializer

_pymemcache = require("pymemcache", "memcache")
from pymemcache.client.base import Client  # noqa: E402
from pymemcache.exceptions import (  # noqa: E402
    MemcacheClientError,
    MemcacheError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownCommandError,
    MemcacheUnknownError,
)

__all__ = ["DEFAULT_PORT", "MemcachedClient", "ServerSpec"]

DEFAULT_PORT = 11211
ServerSpec = str | tuple[str, int]

logger = logging.getLogger("chorde.clients.memcached")

_GEN_SIZE = 8
_ZERO_GEN = bytes(_GEN_SIZE)
_HORIZON = struct.Struct("<d")
# memcached reads an expiry above 30 days as an absolute unix time (protocol.txt, "Expiration").
_RELATIVE_EXPTIME_MAX = 30 * 24 * 3600
# Room for the item header and key within memcached's item size limit.
_ITEM_OVERHEAD = 1024
_CAS_ATTEMPTS = 4
# update() contenders retry this often, backing off a little between attempts.
_UPDATE_ATTEMPTS = 64
_ONE_MIB = 1024 * 1024
_LOG_INTERVAL = 60.0
_RECV_SIZE = 65536
# VALUE <key> <flags> <bytes> [<cas>] (protocol.txt, "Retrieval command").
_VALUE_LINE = re.compile(rb"VALUE (\S+) \d+ (\d+)[^\r\n]*\r\n")
# Bound of the per-client memo of str keys' memcached keys (cleared, not evicted, when full).
_KEY_MEMO_SIZE = 8192
# The value sizes of VALUE lines, parsed: int() of the text costs more than a dict lookup, and
# a batch of values tends to repeat a few sizes. Shared, bounded (cleared when full).
_SIZES: dict[bytes, int] = {}
_SIZES_MAX = 4096


class _Guard:
    """A weak-referenceable token whose death closes a thread's connection."""

    __slots__ = ("__weakref__",)


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


class _Server:
    """One memcached server: its connections, liveness and last seen generation.

    Each thread gets its own pymemcache ``Client`` (one socket) for the server: as thread-safe
    as a ``PooledClient``, without its lock and context manager on every call, which cost
    measurably on the single-get path. A thread's connection is closed when the thread
    ends (or when the server is dropped), not left to the garbage collector.
    """

    __slots__ = (
        "_aconns",
        "_conns",
        "_conns_lock",
        "_local",
        "_make_conn",
        "dead_until",
        "gen",
        "horizon",
        "host",
        "name",
        "port",
        "record",
    )

    def __init__(self, host: str, port: int, make_conn: Callable[[tuple[str, int]], Any]) -> None:
        self.host = host
        self.port = port
        self.name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._make_conn = make_conn
        self._local = threading.local()
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        # Event loop -> its asyncio connection; an entry goes with its loop.
        self._aconns: weakref.WeakKeyDictionary[Any, _AsyncConn] = weakref.WeakKeyDictionary()
        self.dead_until = 0.0
        # The namespace's generation record on this server, as last seen: the generation
        # (8 bytes) and the purge horizon (entries that expired before it are gone).
        self.record: bytes | None = None
        self.gen = _ZERO_GEN
        self.horizon = 0.0

    @property
    def client(self) -> Any:
        """This thread's connection to the server."""
        local = self._local
        try:
            return local.conn
        except AttributeError:
            conn = local.conn = self._make_conn((self.host, self.port))
            # The thread's locals go when the thread ends (or this server is dropped), and
            # the guard with them: its finalizer then closes the connection, which would
            # otherwise be left to the garbage collector, unclosed.
            local.guard = guard = _Guard()
            weakref.finalize(guard, _close_quietly, conn)
            with self._conns_lock:
                self._conns.add(conn)
            return conn

    def aconn(self, loop: asyncio.AbstractEventLoop, timeouts: tuple[float, float]) -> _AsyncConn:
        """This event loop's connection to the server."""
        conn = self._aconns.get(loop)
        if conn is None:
            with self._conns_lock:
                conn = self._aconns.get(loop)
                if conn is None:
                    conn = self._aconns[loop] = _AsyncConn(self.host, self.port, *timeouts)
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
                if loop.is_running() and not _runs_in(loop):
                    loop.call_soon_threadsafe(aconn.close)
                    continue
            aconn.close()

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<memcached {self.name}>"


def _get_many(conn: Any, keys: list[bytes]) -> dict[bytes, bytes]:
    """memcached ``get`` of ``keys`` on a pymemcache ``Client``'s socket: ``{key: value}``.

    pymemcache's own ``get_many`` validates every key and parses every value through several
    Python calls; our keys are valid by construction (:func:`chorde.keys.memcache_key`), and
    this single loop halves the per-key cost of a 100-key batch. Any failure closes the
    connection (pymemcache reconnects on next use) and propagates.
    """
    sock = conn.sock
    if sock is None:
        conn._connect()
        sock = conn.sock
    try:
        sock.sendall(b"get " + b" ".join(keys) + b"\r\n")
        buf = sock.recv(_RECV_SIZE)
        pos = 0
        result: dict[bytes, bytes] = {}
        match = _VALUE_LINE.match
        sizes = _SIZES
        while True:
            value_line = match(buf, pos)
            if value_line is not None:
                key, size_text = value_line.groups()
                size = sizes.get(size_text)
                if size is None:
                    if len(sizes) >= _SIZES_MAX:
                        sizes.clear()
                    size = sizes[size_text] = int(size_text)
                start = value_line.end()
                end = start + size
                if len(buf) < end + 2:
                    buf = _recv_more(sock, buf, pos, end + 2 - pos)
                    pos = 0
                    continue  # parse the line again, from the start of the new buffer
                result[key] = buf[start:end]  # (buf is bytes: slices are copies)
                pos = end + 2
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                buf = _recv_more(sock, buf, pos, len(buf) - pos + 1)
                pos = 0
                continue
            if eol == pos + 3 and buf.startswith(b"END", pos):
                return result
            raise MemcacheUnknownError(buf[pos : min(eol, pos + 64)])
    except BaseException:
        conn.close()
        raise


def _recv_more(sock: Any, buf: bytes, pos: int, need: int) -> bytes:
    """``buf[pos:]`` extended by reads until it holds ``need`` bytes (at least one read)."""
    parts = [buf[pos:]]
    have = len(parts[0])
    while True:
        chunk = sock.recv(max(_RECV_SIZE, need - have))
        if not chunk:
            raise MemcacheUnexpectedCloseError()
        parts.append(chunk)
        have += len(chunk)
        if have >= need:
            return b"".join(parts)


def _runs_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _AsyncConn:
    """One asyncio connection to a server, speaking the memcached text protocol.

    Built on the loop's ``sock_*`` calls over a socket of our own, not on a stream transport:
    a transport is bound to its loop and cannot be closed once the loop is, while this
    socket is registered with the loop only during a call, so it can be closed whenever its
    loop goes away. One request is in flight at a time (callers queue, first come first
    served); any failure or cancellation mid-request closes the socket, since the stream
    could be left mid-reply, and the next call reconnects. Waits are bounded by
    ``connect_timeout`` and ``timeout``. No reference to the loop is kept while idle.
    """

    __slots__ = ("_busy", "_rest", "_waiters", "connect_timeout", "host", "port", "sock", "timeout")

    def __init__(self, host: str, port: int, connect_timeout: float, timeout: float) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._rest = b""
        self._busy = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def close(self) -> None:
        """Drop the socket (the next request reconnects)."""
        sock, self.sock, self._rest = self.sock, None, b""
        if sock is not None:
            sock.close()

    # -- a first come, first served lock that keeps no loop reference while free --

    async def _acquire(self) -> None:
        if not self._busy:
            self._busy = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed over just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the lock passes to it, still busy
                return
        self._busy = False

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        async with asyncio.timeout(self.connect_timeout):
            if _is_ip(self.host):
                family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
                address: Any = (self.host, self.port)
            else:
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
                family, _, _, _, address = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self._rest = b""
        return sock

    async def request(self, data: bytes, reply: Callable[..., Any], *args: Any) -> Any:
        """Send ``data`` and parse the answer with ``reply(self, loop, sock, *args)``."""
        await self._acquire()
        try:
            loop = asyncio.get_running_loop()
            sock = self.sock
            if sock is None:
                sock = await self._connect(loop)
            try:
                async with asyncio.timeout(self.timeout):
                    await loop.sock_sendall(sock, data)
                    return await reply(self, loop, sock, *args)
            except BaseException:
                self.close()
                raise
        finally:
            self._release()

    # -- reply parsers (called under the lock) --

    async def _more(self, loop: Any, sock: Any, buf: bytes, pos: int, need: int) -> bytes:
        """``buf[pos:]`` extended by reads until it holds ``need`` bytes (at least one read)."""
        parts = [buf[pos:]]
        have = len(parts[0])
        while True:
            chunk = await loop.sock_recv(sock, max(_RECV_SIZE, need - have))
            if not chunk:
                raise MemcacheUnexpectedCloseError()
            parts.append(chunk)
            have += len(chunk)
            if have >= need:
                return b"".join(parts)

    async def raw_line(self, loop: Any, sock: Any) -> bytes:
        """One reply line, without its CRLF."""
        buf = self._rest
        while (eol := buf.find(b"\r\n")) < 0:
            buf = await self._more(loop, sock, buf, 0, len(buf) + 1)
        self._rest = buf[eol + 2 :]
        return buf[:eol]

    async def line(self, loop: Any, sock: Any) -> bytes:
        """One reply line, without its CRLF; error lines raise."""
        return _check_reply(await self.raw_line(loop, sock))

    async def probed(self, loop: Any, sock: Any) -> tuple[int, bytes]:
        """The replies to a :func:`_probe` and the request after it (see there)."""
        flags = _probed_flags(await self.raw_line(loop, sock))
        return flags, await self.line(loop, sock)

    async def nothing(self, loop: Any, sock: Any) -> None:
        """No reply to read (``noreply`` commands)."""

    async def probed_many(self, loop: Any, sock: Any, count: int) -> list[tuple[int, bytes]]:
        """The replies to ``count`` pipelined :func:`_probe_set_many` pairs (see there)."""
        return _probed_replies([await self.raw_line(loop, sock) for _ in range(2 * count)])

    async def values(self, loop: Any, sock: Any, with_cas: bool) -> dict[bytes, Any]:
        """A ``get``/``gets`` reply: ``{key: value}`` or ``{key: (value, cas)}``."""
        buf = self._rest
        pos = 0
        result: dict[bytes, Any] = {}
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                buf = await self._more(loop, sock, buf, pos, len(buf) - pos + 1)
                pos = 0
                continue
            if not buf.startswith(b"VALUE ", pos):
                if eol == pos + 3 and buf.startswith(b"END", pos):
                    self._rest = buf[eol + 2 :]
                    return result
                _check_reply(buf[pos:eol])
                raise MemcacheUnknownError(buf[pos : min(eol, pos + 64)])
            # VALUE <key> <flags> <bytes> [<cas>]
            header = buf[pos + 6 : eol].split()
            start = eol + 2
            end = start + int(header[2])
            if len(buf) < end + 2:
                buf = await self._more(loop, sock, buf, pos, end + 2 - pos)
                pos = 0
                continue
            value = buf[start:end]
            result[header[0]] = (value, int(header[3])) if with_cas else value
            pos = end + 2

    # -- commands --

    async def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """``get``: ``{key: value}`` of the keys found."""
        return await self.request(b"get " + b" ".join(keys) + b"\r\n", _AsyncConn.values, False)

    async def gets_many(self, keys: list[bytes]) -> dict[bytes, tuple[bytes, int]]:
        """``gets``: ``{key: (value, cas)}`` of the keys found."""
        return await self.request(b"gets " + b" ".join(keys) + b"\r\n", _AsyncConn.values, True)

    async def store(
        self,
        cmd: bytes,
        key: bytes,
        value: bytes,
        exptime: int,
        cas: int | None = None,
        flags: int = 0,
    ) -> bool | None:
        """``set``/``add``/``cas``: True if stored, False if not, None if a cas key is gone."""
        data = _set_command(cmd, key, flags, exptime, value, cas)
        return _store_result(await self.request(data, _AsyncConn.line))

    async def probe_and_send(self, key: bytes, request: bytes) -> tuple[int, bytes]:
        """:func:`_probe_and_send` on this connection."""
        return await self.request(_probe(key) + request, _AsyncConn.probed)

    async def probe_and_set_many(
        self, items: dict[bytes, bytes], exptime: int, gen: bytes
    ) -> list[tuple[int, bytes]]:
        """:func:`_probe_and_set_many` on this connection."""
        data = _probe_set_many(items, exptime, gen)
        return await self.request(data, _AsyncConn.probed_many, len(items))

    async def command(self, line: bytes) -> bytes:
        """A one-line command (``delete``, ``touch``) and its one-line reply."""
        return await self.request(line + b"\r\n", _AsyncConn.line)


def _check_reply(line: bytes) -> bytes:
    if line.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")):
        if line.startswith(b"SERVER_ERROR"):
            raise MemcacheServerError(line[13:])
        if line.startswith(b"CLIENT_ERROR"):
            raise MemcacheClientError(line[13:])
        raise MemcacheUnknownCommandError(line)
    return line


def _store_result(reply: bytes) -> bool | None:
    if reply == b"STORED":
        return True
    if reply == b"NOT_FOUND":
        return None
    if reply in (b"NOT_STORED", b"EXISTS"):
        return False
    raise MemcacheUnknownError(reply[:64])


def _set_command(
    cmd: bytes, key: bytes, flags: int, exptime: int, value: bytes, cas: int | None = None
) -> bytes:
    """A storage command (``set``/``add``/``cas``) with its data block."""
    head = b"%s %s %d %d %d" % (cmd, key, flags, exptime, len(value))
    if cas is not None:
        head += b" %d" % cas
    return b"".join((head, b"\r\n", value, b"\r\n"))


def _probe(key: bytes) -> bytes:
    """A meta get of ``key``'s item flags only (memcached 1.6+; older servers say ERROR)."""
    return b"mg " + key + b" f\r\n"


def _probed_flags(line: bytes) -> int:
    """The flags in a :func:`_probe` reply (``HD f<flags>``); 0 for a miss or no answer."""
    if line.startswith(b"HD "):
        for token in line.split()[1:]:
            if token.startswith(b"f"):
                return int(token[1:])
    return 0


def _send_and_read_lines(conn: Any, request: bytes, count: int) -> list[bytes]:
    """Send ``request`` on a pymemcache ``Client``'s socket; read ``count`` reply lines.

    The lines come without their CRLF and unchecked. Like :func:`_get_many`, any failure
    closes the connection and propagates.
    """
    sock = conn.sock
    if sock is None:
        conn._connect()
        sock = conn.sock
    try:
        sock.sendall(request)
        buf = sock.recv(_RECV_SIZE)
        lines: list[bytes] = []
        pos = 0
        while len(lines) < count:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                buf = _recv_more(sock, buf, pos, len(buf) - pos + 1)
                pos = 0
                continue
            lines.append(buf[pos:eol])
            pos = eol + 2
    except BaseException:
        conn.close()
        raise
    return lines


def _probe_and_send(conn: Any, key: bytes, request: bytes) -> tuple[int, bytes]:
    """Probe ``key``'s flags and send a one-line-reply ``request`` in one round trip.

    Returns the flags the item had just before the request (0 if none) and the request's
    reply line.
    """
    probed, reply = _send_and_read_lines(conn, _probe(key) + request, 2)
    return _probed_flags(probed), _check_reply(reply)


def _probe_set_many(items: dict[bytes, bytes], exptime: int, gen: bytes) -> bytes:
    """Pipelined requests: for each item, a :func:`_probe` of its key, then its ``set``.

    Each value is stored behind the generation ``gen``, with flags 0 (not paged).
    """
    extra = len(gen)
    return b"".join(
        b"mg %s f\r\nset %s 0 %d %d\r\n%s%s\r\n" % (k, k, exptime, extra + len(v), gen, v)
        for k, v in items.items()
    )


def _probed_replies(lines: list[bytes]) -> list[tuple[int, bytes]]:
    """``(old flags, set reply)`` per item from the reply lines to :func:`_probe_set_many`."""
    return [(_probed_flags(lines[i]), lines[i + 1]) for i in range(0, len(lines), 2)]


def _probe_and_set_many(
    conn: Any, items: dict[bytes, bytes], exptime: int, gen: bytes
) -> list[tuple[int, bytes]]:
    """Set every item, learning each replaced item's flags, in one round trip."""
    lines = _send_and_read_lines(conn, _probe_set_many(items, exptime, gen), 2 * len(items))
    return _probed_replies(lines)


def _delete_noreply(keys: list[bytes]) -> bytes:
    """Pipelined ``delete``s that the server answers with nothing."""
    return b"".join(b"delete %s noreply\r\n" % k for k in keys)


def _send_only(conn: Any, request: bytes) -> None:
    """Send a request that has no reply (``noreply``) on a pymemcache ``Client``'s socket."""
    sock = conn.sock
    if sock is None:
        conn._connect()
        sock = conn.sock
    try:
        sock.sendall(request)
    except BaseException:
        conn.close()
        raise


def _note_record(server: _Server, record: bytes | None) -> bytes:
    """Remember the generation record a server answered with; return its generation."""
    if record is None:
        record = b""
    if record != server.record:
        server.gen = record[:_GEN_SIZE] if len(record) >= _GEN_SIZE else _ZERO_GEN
        has_horizon = len(record) >= _GEN_SIZE + _HORIZON.size
        server.horizon = _HORIZON.unpack_from(record, _GEN_SIZE)[0] if has_horizon else 0.0
        server.record = record
    return server.gen


def _update_backoff(attempt: int) -> float:
    """Seconds an update that lost a compare-and-swap race waits before its next attempt.

    Random, so contenders stop colliding in lockstep; growing a little with the attempts.
    """
    return random.random() * min(0.0005 * (attempt + 1), 0.01)


def _update_lost(key: Key) -> RuntimeError:
    return RuntimeError(
        f"update of cache key {key!r} lost {_UPDATE_ATTEMPTS} compare-and-swap races in a row"
    )


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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")
    return True


class MemcachedClient(BaseCacheClient):
    """A shared cache on one or more memcached servers; see the module docstring.

    ``servers`` is a list of ``"host:port"`` strings (or ``(host, port)`` tuples); the
    ``checksum_key`` (a secret, or a list of them for rotation: sign with the first, accept
    any) signs every value and is required. Other options:

    * ``namespace``: prefix of every memcached key; ``clear()`` clears only its namespace.
    * ``compress`` / ``compress_threshold``: zlib-compress payloads above the threshold.
    * ``connect_timeout`` / ``timeout`` (seconds, default 0.5 / 1.0) bound each server call;
      ``retry_interval`` (default 5 s) is how long a failed server is left alone.
    * ``max_item_size``: the servers' item size limit (memcached ``-I``, default 1 MiB);
      bigger values are paged.
    * ``stale_grace``: seconds stale entries stay readable by ``getTtl`` (default 60).
    * ``dns``: resolve host names with dnspython and follow their changes (default True when
      dnspython is installed); ``resolver`` a ``dns.resolver.Resolver`` or ``nameservers``
      (``["10.0.0.2", "127.0.0.1:5353"]``) to use; ``dns_min_interval`` /
      ``dns_max_interval`` bound the re-resolution period (the record TTL otherwise).
    """

    blocking = True

    def __init__(
        self,
        servers: Sequence[ServerSpec] | ServerSpec,
        checksum_key: str | bytes | Sequence[str | bytes] | None = None,
        *,
        namespace: str = "",
        compress: bool = True,
        compress_threshold: int = 1024,
        connect_timeout: float = 0.5,
        timeout: float = 1.0,
        retry_interval: float = 5.0,
        max_item_size: int = _ONE_MIB,
        stale_grace: float = 60.0,
        dns: bool | None = None,
        resolver: Any = None,
        nameservers: Sequence[str] | None = None,
        dns_min_interval: float = 1.0,
        dns_max_interval: float = 300.0,
        points_per_node: int = 160,
    ) -> None:
        if not checksum_key:
            raise ConfigurationError(
                "MemcachedClient needs a checksum_key: values are pickled, and unpickling "
                "is running code, so every value is HMAC-signed and verified before it is "
                "unpickled; without a secret key anyone who can write to the memcached "
                "could execute code in this process"
            )
        if isinstance(servers, str | tuple):
            servers = [servers]
        specs = [parse_server(s) for s in servers]
        if not specs:
            raise ConfigurationError("servers must name at least one memcached server")
        for name, val in (
            ("connect_timeout", connect_timeout),
            ("timeout", timeout),
            ("retry_interval", retry_interval),
            ("stale_grace", stale_grace),
            ("dns_min_interval", dns_min_interval),
            ("dns_max_interval", dns_max_interval),
        ):
            check_ttl(val, name)
        if not (isinstance(max_item_size, int) and max_item_size > 4 * _ITEM_OVERHEAD):
            raise ConfigurationError(
                f"max_item_size must be an int above {4 * _ITEM_OVERHEAD}, got {max_item_size!r}"
            )
        if not isinstance(namespace, str):
            raise ConfigurationError(f"namespace must be a str, got {namespace!r}")
        try:
            memcache_key("", namespace + "~")
        except ValueError as exc:
            raise ConfigurationError(f"namespace {namespace!r}: {exc}") from None

        self._serializer = Serializer(
            checksum_key, compress=compress, compress_threshold=compress_threshold
        )
        self.namespace = namespace
        self.connect_timeout = float(connect_timeout)
        self.timeout = float(timeout)
        self.retry_interval = float(retry_interval)
        self.stale_grace = float(stale_grace)
        self.max_item_size = max_item_size
        self._page_size = max_item_size - _ITEM_OVERHEAD
        self._internal_prefix = (namespace + "~").encode()
        self._gen_key = self._internal_prefix + b"gen"
        self._log = RateLimitedLog(logger, interval=_LOG_INTERVAL)
        self._hits = self._misses = self._sets = self._errors = 0
        self._key_memo: dict[str, tuple[bytes, bytes]] = {}

        self._servers: dict[tuple[str, int], _Server] = {}
        # Servers dropped from the ring, with when: closed once no call can still be on them.
        self._retired: list[tuple[float, _Server]] = []
        self._ring: HashRing[_Server] = HashRing(points_per_node=points_per_node)
        self._ring_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        self._dns = None
        static: list[tuple[str, int]] = []
        names: list[tuple[str, int]] = []
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
                self._dns = dns_mod.DnsServerList(
                    names,
                    resolver=resolver,
                    nameservers=nameservers,
                    timeout=max(self.connect_timeout, 1.0),
                    min_interval=dns_min_interval,
                    max_interval=dns_max_interval,
                )
        if self._dns is None:
            static += names
        self._static = static
        self._initial_discovery()

    # ---- server list -------------------------------------------------------------------

    def _make_conn(self, address: tuple[str, int]) -> Any:
        return Client(
            address,
            connect_timeout=self.connect_timeout,
            timeout=self.timeout,
            no_delay=True,
            default_noreply=False,
        )

    def _initial_discovery(self) -> None:
        """Build the first ring and start the refresher thread if the list can change."""
        interval = self._discover()
        if interval is not None:
            self._thread = threading.Thread(
                target=self._refresh_loop,
                args=(interval,),
                name=f"chorde-memcached-refresh-{id(self):x}",
                daemon=True,
            )
            self._thread.start()

    def _discover(self) -> float | None:
        """Update the ring from the server sources; return seconds to the next refresh."""
        if self._dns is None:
            self._set_servers(self._static)
            return None
        addresses, interval = self._dns.resolve()
        self._set_servers([*self._static, *addresses])
        return interval

    def _refresh_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                next_interval = self._discover()
            except Exception:  # never let the refresher die
                logger.exception("chorde: refreshing the memcached server list failed")
                next_interval = None
            if next_interval is not None:
                interval = next_interval

    def _set_servers(self, addresses: Iterable[tuple[str, int]]) -> None:
        """Swap in a ring over ``addresses``, reusing the pools of servers already known."""
        with self._ring_lock:
            wanted = list(dict.fromkeys(addresses))
            if not wanted and self._servers:
                # An empty answer is far likelier a glitch than a cluster without nodes.
                return
            if set(wanted) == set(self._servers) and self._ring:
                return
            servers = {a: self._servers.get(a) or _Server(*a, self._make_conn) for a in wanted}
            # A caller may have picked a server from the old ring just before the swap: close
            # a dropped server only once any call it could still be serving has timed out.
            now = time.monotonic()
            grace = 2 * (self.connect_timeout + self.timeout) + 1.0
            keep = []
            for retired_at, old in self._retired:
                if now - retired_at > grace:
                    old.close()
                else:
                    keep.append((retired_at, old))
            dropped = [s for a, s in self._servers.items() if a not in servers]
            self._retired = keep + [(now, s) for s in dropped]
            self._servers = servers
            self._ring = self._ring.with_nodes(servers.values())
            if dropped or len(servers) > 1:
                logger.info(
                    "chorde: memcached servers now %s", ", ".join(map(str, servers.values()))
                )

    @property
    def servers(self) -> list[str]:
        """The servers currently on the ring, as ``host:port``."""
        return [s.name for s in self._ring.nodes]

    def refresh(self) -> None:
        """Re-resolve the server list now (it is refreshed on a schedule anyway)."""
        self._discover()

    # ---- fault handling -----------------------------------------------------------------

    def _usable(self, server: _Server) -> bool:
        dead_until = server.dead_until
        if not dead_until:
            return True
        now = time.monotonic()
        if now < dead_until:
            return False
        # Let one caller probe the server; the others keep treating it as dead meanwhile.
        server.dead_until = now + self.retry_interval
        return True

    def _fault(self, server: _Server, exc: BaseException, what: str) -> None:
        self._errors += 1
        if isinstance(exc, OSError | MemcacheUnexpectedCloseError) or not isinstance(
            exc, MemcacheError
        ):
            server.dead_until = time.monotonic() + self.retry_interval
            self._log.warning(
                "chorde: memcached %s failed during %s (%s: %s); treating it as down for %.1f s",
                server.name,
                what,
                type(exc).__name__,
                exc,
                self.retry_interval,
                kind=f"down {server.name}",
            )
        else:
            self._log.warning(
                "chorde: memcached %s refused %s: %s: %s",
                server.name,
                what,
                type(exc).__name__,
                exc,
                kind=f"refused {server.name}",
            )

    def _alive(self, server: _Server) -> None:
        if server.dead_until:
            server.dead_until = 0.0
            logger.info("chorde: memcached %s is back", server.name)

    def _bad_payload(self, key: Key, exc: Exception) -> None:
        self._errors += 1
        self._log.warning("chorde: dropping an invalid memcached payload for %r: %s", key, exc)

    # ---- helpers ------------------------------------------------------------------------

    def _map_key(self, key: Key) -> tuple[bytes, bytes]:
        """``(memcached key, encoded key)`` of ``key``; str keys are memoized."""
        if type(key) is str:
            # Only exact str keys: 1, 1.0 and True hash alike but encode differently.
            memo = self._key_memo
            mapped = memo.get(key)
            if mapped is None:
                mkey, encoded = memcache_key(key, self.namespace)
                mapped = (mkey.encode("ascii"), encoded)
                if len(memo) >= _KEY_MEMO_SIZE:
                    memo.clear()
                memo[key] = mapped
            return mapped
        mkey, encoded = memcache_key(key, self.namespace)
        return mkey.encode("ascii"), encoded

    def _locate(self, key: Key) -> tuple[bytes, bytes, _Server]:
        raw, encoded = self._map_key(key)
        return raw, encoded, self._ring.get_node(raw)

    def _exptime(self, ttl: float) -> int:
        """memcached's expiry for an entry logically alive ``ttl`` more seconds."""
        if ttl == math.inf:
            return 0
        seconds = max(1, math.ceil(ttl + self.stale_grace))
        if seconds > _RELATIVE_EXPTIME_MAX:
            return int(time.time()) + seconds
        return seconds

    def _generation(self, server: _Server) -> bytes:
        """The server's current generation, fetched if this client never saw it."""
        if server.record is None:
            found = _get_many(server.client, [self._gen_key])
            return _note_record(server, found.get(self._gen_key))
        return server.gen

    def _encode(self, key: Key, encoded: bytes, value: Any, ttl: float) -> bytes:
        try:
            return self._serializer.dumps(value, key=encoded, expires=time.time() + ttl)
        except Exception as exc:
            exc.add_note(f"while serializing the value for cache key {key!r}")
            raise

    def _decode(self, key: Key, encoded: bytes, data: bytes | None, server: _Server) -> Any:
        """``(value_or_manifest, expires)`` from a stored item, or None for a miss."""
        if data is None or data[:_GEN_SIZE] != server.gen:
            return None
        try:
            entry = self._serializer.loads(data, key=encoded, offset=_GEN_SIZE)
        except InvalidPayload as exc:
            self._bad_payload(key, exc)
            return None
        if server.horizon and entry[1] <= server.horizon:
            return None
        return entry

    def _write_pages(self, payload: bytes, exptime: int, owner: bytes) -> PageManifest | None:
        """Store ``payload`` as pages; return the manifest, or None if a page failed."""
        manifest, pages = make_pages(payload, self._page_size, owner)
        keys = manifest.page_keys(self._internal_prefix)
        ring = self._ring
        by_server: dict[_Server, dict[bytes, Any]] = {}
        for key, page in zip(keys, pages, strict=True):
            by_server.setdefault(ring.get_node(key), {})[key] = page
        for server, batch in by_server.items():
            if not self._usable(server):
                self._errors += 1
                return None
            try:
                # One page per call: a multi-megabyte batch would be joined in memory.
                for key, page in batch.items():
                    if not server.client.set(key, bytes(page), expire=exptime, noreply=False):
                        self._errors += 1
                        return None
            except Exception as exc:
                self._fault(server, exc, "a page write")
                return None
            self._alive(server)
        return manifest

    def _by_server(self, keys: list[bytes]) -> dict[_Server, list[bytes]]:
        """``keys`` grouped by the server each belongs to, in order."""
        ring = self._ring
        by_server: dict[_Server, list[bytes]] = {}
        for key in keys:
            by_server.setdefault(ring.get_node(key), []).append(key)
        return by_server

    def _paged_value(
        self, key: Key, encoded: bytes, manifest: PageManifest, found: dict[bytes, bytes]
    ) -> Any:
        """The value of a manifest from its pages found, or NONE if any is missing or bad."""
        payload = assemble(manifest, manifest.page_keys(self._internal_prefix), found)
        if payload is None:
            return NONE
        try:
            return self._serializer.loads(payload, key=encoded)[0]
        except InvalidPayload as exc:
            self._bad_payload(key, exc)
            return NONE

    def _read_pages(self, key: Key, encoded: bytes, manifest: PageManifest) -> Any:
        """The value a manifest points to, or NONE if any page is missing or bad."""
        found: dict[bytes, bytes] = {}
        for server, batch in self._by_server(manifest.page_keys(self._internal_prefix)).items():
            if not self._usable(server):
                self._errors += 1
                return NONE
            try:
                found.update(_get_many(server.client, batch))
            except Exception as exc:
                self._fault(server, exc, "a page read")
                return NONE
            self._alive(server)
        return self._paged_value(key, encoded, manifest, found)

    def _store_payload(
        self, payload: bytes, key: Key, encoded: bytes, ttl: float, raw: bytes
    ) -> tuple[bytes, int] | None:
        """The item and flags to store for ``payload`` (paged first if too big), or None."""
        if len(payload) + _GEN_SIZE <= self._page_size:
            return payload, 0
        exptime = self._exptime(ttl)
        # Pages outlive their manifest by a second so it never points at expired pages.
        manifest = self._write_pages(payload, exptime and exptime + 1, raw)
        if manifest is None:
            return None
        return self._encode(key, encoded, manifest, ttl), manifest.flags

    def _old_pages(self, owner: bytes, old_flags: int, new_flags: int) -> list[bytes]:
        """Pages of the paged item (``old_flags``) that an item with ``new_flags`` replaced."""
        if not old_flags or (new_flags and new_flags >> 16 == old_flags >> 16):
            return []  # not paged, or the same page keys (just rewritten)
        return page_keys_from_flags(self._internal_prefix, owner, old_flags)

    def _drop_pages(self, keys: list[bytes]) -> None:
        """Best effort: delete pages nobody points to any more (else they age out)."""
        for server, batch in self._by_server(keys).items():
            if server.dead_until:
                continue
            with contextlib.suppress(Exception):
                _send_only(server.client, _delete_noreply(batch))

    # ---- reads --------------------------------------------------------------------------

    def _lookup(self, key: Key) -> tuple[Any, float] | None:
        """``(value, expires)`` for ``key``, or None on a miss (counted, but not as a hit)."""
        # The hot path: everything it needs is inlined.
        if type(key) is str:
            mapped = self._key_memo.get(key)
            raw, encoded = mapped if mapped is not None else self._map_key(key)
        else:
            raw, encoded = self._map_key(key)
        server = self._ring.get_node(raw)
        if server.dead_until and not self._usable(server):
            self._errors += 1
            return None
        gen_key = self._gen_key
        try:
            try:
                conn = server._local.conn
            except AttributeError:
                conn = server.client
            found = _get_many(conn, [raw, gen_key])
        except Exception as exc:
            self._fault(server, exc, "a get")
            return None
        if server.dead_until:
            self._alive(server)
        record = found.get(gen_key, b"")
        if record != server.record:
            _note_record(server, record)
        data = found.get(raw)
        if data is None or data[:_GEN_SIZE] != server.gen:
            return None
        try:
            entry = self._serializer.loads(data, key=encoded, offset=_GEN_SIZE)
        except InvalidPayload as exc:
            self._bad_payload(key, exc)
            return None
        if server.horizon and entry[1] <= server.horizon:
            return None
        if type(entry[0]) is PageManifest:
            value = self._read_pages(key, encoded, entry[0])
            return None if value is NONE else (value, entry[1])
        return entry

    def get(self, key: Key, default: Any = NONE) -> Any:
        """Return the live value for ``key``, ``default`` if given, else raise a miss."""
        entry = self._lookup(key)
        if entry is not None and entry[1] > time.time():
            self._hits += 1
            return entry[0]
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default

    def getTtl(self, key: Key, default: Any = NONE) -> tuple[Any, float]:
        """Return ``(value, ttl_left)``; stale entries come back with ``ttl_left <= 0``."""
        entry = self._lookup(key)
        if entry is not None:
            self._hits += 1
            return entry[0], entry[1] - time.time()
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default, -1.0

    def _plan_many(
        self, keys: list[Key]
    ) -> tuple[list[tuple[bytes, bytes]], list[_Server], dict[_Server, list[bytes]]]:
        """Mapped keys, their servers, and the memcached keys to ask each server for."""
        memo_get = self._key_memo.get
        mapped = [memo_get(key) if type(key) is str else None for key in keys]
        if None in mapped:
            map_key = self._map_key
            for i, m in enumerate(mapped):
                if m is None:
                    mapped[i] = map_key(keys[i])
        ring = self._ring
        if len(ring) == 1:
            # One server (the common local setup): no grouping.
            only = ring.get_node(b"")
            return mapped, [only] * len(keys), {only: [m[0] for m in mapped]}
        servers = []
        by_server: dict[_Server, list[bytes]] = {}
        for raw, _ in mapped:
            server = ring.get_node(raw)
            servers.append(server)
            batch = by_server.get(server)
            if batch is None:
                by_server[server] = [raw]
            else:
                batch.append(raw)
        return mapped, servers, by_server

    def _decode_many(
        self,
        keys: list[Key],
        mapped: list[tuple[bytes, bytes]],
        servers: list[_Server],
        found: dict[bytes, bytes],
    ) -> tuple[list[Any], list[int]]:
        """Entries (``(value_or_manifest, expires)`` or None) and the indices of manifests."""
        loads = self._serializer.loads
        entries: list[Any] = []
        append = entries.append
        paged: list[int] = []
        for key, (raw, encoded), server in zip(keys, mapped, servers, strict=True):
            data = found.get(raw)
            # (A server that did not answer contributed nothing to ``found``.)
            if data is None or data[:_GEN_SIZE] != server.gen:
                append(None)
                continue
            try:
                entry = loads(data, key=encoded, offset=_GEN_SIZE)
            except InvalidPayload as exc:
                self._bad_payload(key, exc)
                append(None)
                continue
            if server.horizon and entry[1] <= server.horizon:
                entry = None
            elif type(entry[0]) is PageManifest:
                paged.append(len(entries))
            append(entry)
        return entries, paged

    def _fetch_many(
        self, keys: list[Key]
    ) -> tuple[list[tuple[bytes, bytes]], list[_Server], dict[bytes, bytes], _Server | None]:
        """Mapped keys, their servers, the items found, and the server if only one is involved.

        One round trip per server.
        """
        mapped, servers, by_server = self._plan_many(keys)
        gen_key = self._gen_key
        found: dict[bytes, bytes] = {}
        for server, raws in by_server.items():
            if server.dead_until and not self._usable(server):
                self._errors += len(raws)
                continue
            raws.append(gen_key)
            try:
                got = _get_many(server.client, raws)
            except Exception as exc:
                self._fault(server, exc, "a multi-get")
                continue
            if server.dead_until:
                self._alive(server)
            _note_record(server, got.pop(gen_key, None))
            if found:
                found.update(got)
            else:
                found = got
        single = next(iter(by_server)) if len(by_server) == 1 else None
        return mapped, servers, found, single

    def _multi(
        self, keys: Iterable[Key], default: Any, with_ttl: bool
    ) -> Iterator[tuple[Key, Any]]:
        """getMulti (``with_ttl`` False) or getTtlMulti; one pass, decoding as it yields."""
        keys = list(keys)
        mapped, servers, found, single = self._fetch_many(keys)
        loads = self._serializer.loads
        manifest_type = PageManifest
        now = time.time()
        miss = (default, -1.0) if with_ttl else default
        hits = 0
        # All keys on one server (the common case): its generation and horizon hoisted.
        if single is not None:
            gen, horizon = single.gen, single.horizon
            # An entry is a miss when it expired by the purge horizon (or, for getMulti,
            # by now): one comparison per key.
            floor = (horizon or -math.inf) if with_ttl else max(horizon, now)
        try:
            for key, (raw, encoded), server in zip(keys, mapped, servers, strict=True):
                data = found.get(raw)
                if single is None:
                    gen, horizon = server.gen, server.horizon
                    floor = (horizon or -math.inf) if with_ttl else max(horizon, now)
                # (A server that did not answer contributed nothing to ``found``.)
                if data is None or not data.startswith(gen):
                    yield key, miss
                    continue
                try:
                    value, expires = loads(data, key=encoded, offset=_GEN_SIZE)
                except InvalidPayload as exc:
                    self._bad_payload(key, exc)
                    yield key, miss
                    continue
                if expires <= floor:
                    yield key, miss
                    continue
                if type(value) is manifest_type:
                    value = self._read_pages(key, encoded, value)
                    if value is NONE:
                        yield key, miss
                        continue
                hits += 1
                yield key, ((value, expires - now) if with_ttl else value)
        finally:
            self._hits += hits
            self._misses += len(keys) - hits

    def getTtlMulti(self, keys: Iterable[Key], default: Any = NONE) -> Iterator[tuple[Key, Any]]:
        """Yield ``(key, (value, ttl_left))``; one round trip per server involved."""
        return self._multi(keys, default, True)

    def getMulti(self, keys: Iterable[Key], default: Any = NONE) -> Iterator[tuple[Key, Any]]:
        """Yield ``(key, value)``; misses and stale entries give ``default``."""
        return self._multi(keys, default, False)

    # ---- writes -------------------------------------------------------------------------

    def put(self, key: Key, value: Any, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; dropped (and counted) if the server is down."""
        ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        payload = self._encode(key, encoded, value, ttl)
        if not self._usable(server):
            self._errors += 1
            return
        try:
            gen = self._generation(server)
            stored = self._store_payload(payload, key, encoded, ttl, raw)
            if stored is None:
                return
            item, flags = stored
            # The old item's flags come back in the same round trip: were it paged, its
            # pages are deleted rather than left to age out.
            command = _set_command(b"set", raw, flags, self._exptime(ttl), gen + item)
            old_flags, reply = _probe_and_send(server.client, raw, command)
        except Exception as exc:
            self._fault(server, exc, "a set")
            return
        self._alive(server)
        pages = self._stored(raw, reply, old_flags, flags)
        if pages:
            self._drop_pages(pages)

    def _plan_put_many(
        self, items: Iterable[tuple[Key, Any]] | dict, ttl: float
    ) -> tuple[dict[_Server, dict[bytes, bytes]], list[tuple[Key, Any]]]:
        """The payloads to set on each server, and the pairs too big for a batch (paged)."""
        if isinstance(items, dict):
            items = items.items()
        by_server: dict[_Server, dict[bytes, bytes]] = {}
        big = []
        for key, value in items:
            raw, encoded, server = self._locate(key)
            payload = self._encode(key, encoded, value, ttl)
            if len(payload) + _GEN_SIZE > self._page_size:
                big.append((key, value))
                continue
            by_server.setdefault(server, {})[raw] = payload
        return by_server, big

    def _put_many_done(
        self, batch: dict[bytes, bytes], replies: list[tuple[int, bytes]]
    ) -> list[bytes]:
        """Count a batch's replies; return the pages of the paged items it replaced."""
        pages: list[bytes] = []
        for raw, (old_flags, reply) in zip(batch, replies, strict=True):
            pages += self._stored(raw, reply, old_flags, 0)
        return pages

    def _stored(self, raw: bytes, reply: bytes, old_flags: int, flags: int) -> list[bytes]:
        """Count a ``set``'s reply; return the pages of the paged item it replaced, if any.

        ``old_flags`` are the replaced item's (probed in the same round trip), ``flags``
        the new item's: pages shared by both (a rewrite under the same token) are kept.
        """
        if reply != b"STORED":
            self._errors += 1
            return []
        self._sets += 1
        return self._old_pages(raw, old_flags, flags) if old_flags else []

    def putMulti(self, items: Iterable[tuple[Key, Any]] | dict, ttl: float) -> None:
        """Store many pairs with one ttl; one round trip per server (big values aside)."""
        ttl = check_ttl(ttl)
        by_server, big = self._plan_put_many(items, ttl)
        exptime = self._exptime(ttl)
        for server, batch in by_server.items():
            if not self._usable(server):
                self._errors += len(batch)
                continue
            try:
                gen = self._generation(server)
                replies = _probe_and_set_many(server.client, batch, exptime, gen)
            except Exception as exc:
                self._errors += len(batch) - 1
                self._fault(server, exc, "a multi-set")
                continue
            self._alive(server)
            pages = self._put_many_done(batch, replies)
            if pages:
                self._drop_pages(pages)
        for key, value in big:
            self.put(key, value, ttl)

    def add(self, key: Key, value: Any, ttl: float) -> bool:
        """Store only if ``key`` has no live entry; atomic across clients (memcached add/cas)."""
        ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        payload = self._encode(key, encoded, value, ttl)
        if not self._usable(server):
            self._errors += 1
            return False
        exptime = self._exptime(ttl)
        try:
            stored = self._store_payload(payload, key, encoded, ttl, raw)
            if stored is None:
                return False
            item, flags = stored
            for _ in range(_CAS_ATTEMPTS):
                gen = self._generation(server)
                if server.client.add(raw, gen + item, expire=exptime, noreply=False, flags=flags):
                    self._sets += 1
                    return True
                # Something is there: replace it only if it is stale, foreign or invalid.
                found = server.client.gets_many([raw, self._gen_key])
                gen, cas, entry = self._from_gets(key, raw, encoded, server, found)
                if cas is None:
                    continue
                if entry is not None and entry[1] > time.time():
                    if type(entry[0]) is not PageManifest:
                        return False
                    if self._read_pages(key, encoded, entry[0]) is not NONE:
                        return False
                if server.client.cas(
                    raw, gen + item, cas, expire=exptime, noreply=False, flags=flags
                ):
                    self._sets += 1
                    if entry is not None and type(entry[0]) is PageManifest:
                        self._drop_pages(self._old_pages(raw, entry[0].flags, flags))
                    return True
        except Exception as exc:
            self._fault(server, exc, "an add")
            return False
        self._alive(server)
        return False

    def delete(self, key: Key) -> None:
        """Remove ``key`` (and the pages of a paged value, best effort)."""
        raw, _, server = self._locate(key)
        if not self._usable(server):
            self._errors += 1
            return
        try:
            old_flags, _ = _probe_and_send(server.client, raw, b"delete " + raw + b"\r\n")
        except Exception as exc:
            self._fault(server, exc, "a delete")
            return
        self._alive(server)
        if old_flags:
            self._drop_pages(self._old_pages(raw, old_flags, 0))

    def _update_expiry(self, key: Key, new_ttl: Callable[[float], float], what: str) -> bool:
        """gets/cas loop re-signing the entry of ``key`` with a new logical ttl."""
        raw, encoded, server = self._locate(key)
        if not self._usable(server):
            self._errors += 1
            return False
        try:
            for _ in range(_CAS_ATTEMPTS):
                found = server.client.gets_many([raw, self._gen_key])
                gen, cas, entry = self._from_gets(key, raw, encoded, server, found)
                if entry is None:
                    return False
                item, exptime, flags = self._resigned(key, encoded, gen, entry, new_ttl)
                if flags and not self._touch_pages(entry[0], exptime):
                    return False
                stored = server.client.cas(
                    raw, item, cas, expire=exptime, noreply=False, flags=flags
                )
                if stored:
                    return True
                if stored is None:  # deleted meanwhile
                    return False
        except Exception as exc:
            self._fault(server, exc, what)
            return False
        self._alive(server)
        return False

    def _touch_pages(self, manifest: PageManifest, exptime: int) -> bool:
        for page_key in manifest.page_keys(self._internal_prefix):
            server = self._ring.get_node(page_key)
            if not self._usable(server):
                return False
            if not server.client.touch(page_key, expire=exptime and exptime + 1, noreply=False):
                return False
        return True

    def update(self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None) -> Any:
        """Atomically replace the live value of ``key`` by ``fn(value)``; return the new value.

        A compare-and-swap loop (memcached ``gets``/``cas``): if another client writes the
        entry between the read and the write, ``fn`` runs again on the newer value, up to
        64 times with a short random back-off, then ``RuntimeError``. ``ttl`` is the new
        entry's ttl; None keeps the time the entry had left. A missing or stale entry, or
        one whose server is down, raises :class:`~chorde.CacheMissError`; what ``fn``
        raises propagates. Use it for counters and other read-modify-write updates::

            hits = client.update("hits", lambda n: n + 1)
        """
        return self.updateTtl(key, fn, ttl)[0]

    def updateTtl(
        self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """:meth:`update`, returning ``(new value, ttl_left)``."""
        if ttl is not None:
            ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        if not self._usable(server):
            self._errors += 1
            raise CacheMissError(key)
        for attempt in range(_UPDATE_ATTEMPTS):
            try:
                found = server.client.gets_many([raw, self._gen_key])
            except Exception as exc:
                self._fault(server, exc, "an update")
                raise CacheMissError(key) from exc
            self._alive(server)
            gen, cas, value, expires, now = self._update_entry(key, raw, encoded, server, found)
            old_flags = 0
            if type(value) is PageManifest:
                old_flags = value.flags
                value = self._read_pages(key, encoded, value)
                if value is NONE:
                    raise CacheMissError(key)
            new = fn(value)
            new_ttl = expires - now if ttl is None else ttl
            payload = self._encode(key, encoded, new, new_ttl)
            written = self._store_payload(payload, key, encoded, new_ttl, raw)
            if written is None:  # a page could not be written (counted)
                raise CacheMissError(key)
            item, flags = written
            try:
                stored = server.client.cas(
                    raw, gen + item, cas, expire=self._exptime(new_ttl), noreply=False, flags=flags
                )
            except Exception as exc:
                self._fault(server, exc, "an update")
                raise CacheMissError(key) from exc
            if stored:
                self._sets += 1
                if old_flags:
                    self._drop_pages(self._old_pages(raw, old_flags, flags))
                return new, new_ttl
            if stored is None:  # deleted meanwhile
                raise CacheMissError(key)
            time.sleep(_update_backoff(attempt))
        raise _update_lost(key)

    def _from_gets(
        self, key: Key, raw: bytes, encoded: bytes, server: _Server, found: dict[bytes, Any]
    ) -> tuple[bytes, int | None, tuple[Any, float] | None]:
        """What a ``gets`` of an entry and the generation found: ``(generation, cas,
        (value or manifest, expires))``; cas None if absent, the entry None if absent or
        invalid (stale entries are returned)."""
        gen = _note_record(server, found.get(self._gen_key, (None,))[0])
        item = found.get(raw)
        if item is None:
            return gen, None, None
        return gen, item[1], self._decode(key, encoded, item[0], server)

    def _resigned(
        self,
        key: Key,
        encoded: bytes,
        gen: bytes,
        entry: tuple[Any, float],
        new_ttl: Callable[[float], float],
    ) -> tuple[bytes, int, int]:
        """``(item, exptime, flags)`` storing ``entry`` again with the ttl ``new_ttl(left)``."""
        value, expires = entry
        ttl = new_ttl(expires - time.time())
        flags = value.flags if type(value) is PageManifest else 0
        return gen + self._encode(key, encoded, value, ttl), self._exptime(ttl), flags

    def _update_entry(
        self, key: Key, raw: bytes, encoded: bytes, server: _Server, found: dict[bytes, Any]
    ) -> tuple[bytes, int, Any, float, float]:
        """``(generation, cas, value or manifest, expires, now)`` of the live entry in an
        update's ``gets`` reply; a missing, invalid or stale entry raises a miss."""
        gen, cas, entry = self._from_gets(key, raw, encoded, server, found)
        now = time.time()
        if entry is None or entry[1] <= now:
            raise CacheMissError(key)
        return gen, cas, entry[0], entry[1], now  # type: ignore[return-value]

    def renew(self, key: Key, ttl: float) -> bool:
        """Give an existing entry (stale or not) ``ttl`` more seconds; False if absent."""
        ttl = check_ttl(ttl)
        return self._update_expiry(key, lambda _left: ttl, "a renew")

    def expire(self, key: Key) -> None:
        """Mark the entry stale now; ``getTtl`` still returns it for ``stale_grace`` seconds."""
        self._update_expiry(key, lambda left: min(left, 0.0), "an expire")

    def contains(self, key: Key, ttl: float | None = None) -> bool:
        """True if ``key`` has a live entry (with more than ``ttl`` seconds left, if given)."""
        try:
            left = self.getTtl(key)[1]
        except CacheMissError:
            return False
        return left > (ttl or 0)

    def clear(self) -> None:
        """Invalidate every entry of this namespace on every server (a new generation)."""
        for server in self._ring.nodes:
            record = os.urandom(_GEN_SIZE)
            try:
                server.client.set(self._gen_key, record, expire=0, noreply=False)
            except Exception as exc:
                self._fault(server, exc, "a clear")
                continue
            _note_record(server, record)
            self._alive(server)

    def purge(self, timeout: float = 0) -> None:
        """Hide, for every client of the namespace, entries expired over ``timeout`` s ago.

        memcached frees their memory itself once their server expiry (``stale_grace``
        after the logical one) passes; purging moves the purge horizon kept beside the
        generation, so ``getTtl`` stops returning them at once.
        """
        horizon = time.time() - check_ttl(timeout, "timeout")
        for server in self._ring.nodes:
            try:
                self._raise_horizon(server, horizon)
            except Exception as exc:
                self._fault(server, exc, "a purge")
                continue
            self._alive(server)

    def _raise_horizon(self, server: _Server, horizon: float) -> None:
        client = server.client
        for _ in range(_CAS_ATTEMPTS):
            found = client.gets_many([self._gen_key])
            if self._gen_key not in found:
                record = _ZERO_GEN + _HORIZON.pack(horizon)
                if client.add(self._gen_key, record, expire=0, noreply=False):
                    _note_record(server, record)
                    return
                continue
            old, cas = found[self._gen_key]
            gen = _note_record(server, old)
            if server.horizon >= horizon:
                return
            record = gen + _HORIZON.pack(horizon)
            if client.cas(self._gen_key, record, cas, expire=0, noreply=False):
                _note_record(server, record)
                return

    # ---- native asyncio ------------------------------------------------------------------
    # The awaitable twins speak to the servers over one asyncio connection per server and
    # event loop (:class:`_AsyncConn`), never through an executor; keys, payloads, paging,
    # generations and fault handling are the same as the blocking methods'.

    def _aconn(self, server: _Server) -> _AsyncConn:
        return server.aconn(asyncio.get_running_loop(), (self.connect_timeout, self.timeout))

    async def _ageneration(self, server: _Server, conn: _AsyncConn) -> bytes:
        if server.record is None:
            found = await conn.get_many([self._gen_key])
            return _note_record(server, found.get(self._gen_key))
        return server.gen

    async def _alookup(self, key: Key) -> tuple[Any, float] | None:
        raw, encoded, server = self._locate(key)
        if server.dead_until and not self._usable(server):
            self._errors += 1
            return None
        try:
            found = await self._aconn(server).get_many([raw, self._gen_key])
        except Exception as exc:
            self._fault(server, exc, "a get")
            return None
        self._alive(server)
        _note_record(server, found.get(self._gen_key))
        entry = self._decode(key, encoded, found.get(raw), server)
        if entry is not None and type(entry[0]) is PageManifest:
            value = await self._aread_pages(key, encoded, entry[0])
            return None if value is NONE else (value, entry[1])
        return entry

    async def aget(self, key: Key, default: Any = NONE) -> Any:
        """Awaitable :meth:`get` (native asyncio)."""
        entry = await self._alookup(key)
        if entry is not None and entry[1] > time.time():
            self._hits += 1
            return entry[0]
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default

    async def agetTtl(self, key: Key, default: Any = NONE) -> tuple[Any, float]:
        """Awaitable :meth:`getTtl` (native asyncio)."""
        entry = await self._alookup(key)
        if entry is not None:
            self._hits += 1
            return entry[0], entry[1] - time.time()
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default, -1.0

    async def acontains(self, key: Key, ttl: float | None = None) -> bool:
        """Awaitable :meth:`contains` (native asyncio)."""
        try:
            left = (await self.agetTtl(key))[1]
        except CacheMissError:
            return False
        return left > (ttl or 0)

    async def _alookup_many(self, keys: list[Key]) -> list[Any]:
        mapped, servers, by_server = self._plan_many(keys)
        gen_key = self._gen_key

        async def fetch(server: _Server, raws: list[bytes]) -> dict[bytes, bytes]:
            if server.dead_until and not self._usable(server):
                self._errors += len(raws)
                return {}
            try:
                got = await self._aconn(server).get_many([*raws, gen_key])
            except Exception as exc:
                self._fault(server, exc, "a multi-get")
                return {}
            self._alive(server)
            _note_record(server, got.pop(gen_key, None))
            return got

        if len(by_server) == 1:
            [(server, raws)] = by_server.items()
            found = await fetch(server, raws)
        else:
            found = {}
            for got in await asyncio.gather(*(fetch(s, r) for s, r in by_server.items())):
                found.update(got)
        entries, paged = self._decode_many(keys, mapped, servers, found)
        for i in paged:
            manifest, expires = entries[i]
            value = await self._aread_pages(keys[i], mapped[i][1], manifest)
            entries[i] = None if value is NONE else (value, expires)
        return entries

    async def agetMulti(self, keys: Iterable[Key], default: Any = NONE) -> list[tuple[Key, Any]]:
        """Awaitable :meth:`getMulti`, returning a list of pairs (native asyncio)."""
        keys = list(keys)
        entries = await self._alookup_many(keys)
        now = time.time()
        result = [
            (key, default if entry is None or entry[1] <= now else entry[0])
            for key, entry in zip(keys, entries, strict=True)
        ]
        hits = sum(entry is not None and entry[1] > now for entry in entries)
        self._hits += hits
        self._misses += len(keys) - hits
        return result

    async def agetTtlMulti(
        self, keys: Iterable[Key], default: Any = NONE
    ) -> list[tuple[Key, tuple[Any, float]]]:
        """Awaitable :meth:`getTtlMulti`, returning a list of pairs (native asyncio)."""
        keys = list(keys)
        entries = await self._alookup_many(keys)
        now = time.time()
        result = [
            (key, (default, -1.0) if entry is None else (entry[0], entry[1] - now))
            for key, entry in zip(keys, entries, strict=True)
        ]
        hits = sum(entry is not None for entry in entries)
        self._hits += hits
        self._misses += len(keys) - hits
        return result

    async def _aread_pages(self, key: Key, encoded: bytes, manifest: PageManifest) -> Any:
        found: dict[bytes, bytes] = {}
        for server, batch in self._by_server(manifest.page_keys(self._internal_prefix)).items():
            if not self._usable(server):
                self._errors += 1
                return NONE
            try:
                found.update(await self._aconn(server).get_many(batch))
            except Exception as exc:
                self._fault(server, exc, "a page read")
                return NONE
            self._alive(server)
        return self._paged_value(key, encoded, manifest, found)

    async def _awrite_pages(
        self, payload: bytes, exptime: int, owner: bytes
    ) -> PageManifest | None:
        manifest, pages = make_pages(payload, self._page_size, owner)
        ring = self._ring
        for page_key, page in zip(manifest.page_keys(self._internal_prefix), pages, strict=True):
            server = ring.get_node(page_key)
            if not self._usable(server):
                self._errors += 1
                return None
            try:
                stored = await self._aconn(server).store(b"set", page_key, bytes(page), exptime)
            except Exception as exc:
                self._fault(server, exc, "a page write")
                return None
            self._alive(server)
            if not stored:
                self._errors += 1
                return None
        return manifest

    async def _astore_payload(
        self, payload: bytes, key: Key, encoded: bytes, ttl: float, raw: bytes
    ) -> tuple[bytes, int] | None:
        if len(payload) + _GEN_SIZE <= self._page_size:
            return payload, 0
        exptime = self._exptime(ttl)
        manifest = await self._awrite_pages(payload, exptime and exptime + 1, raw)
        if manifest is None:
            return None
        return self._encode(key, encoded, manifest, ttl), manifest.flags

    async def _adrop_pages(self, keys: list[bytes]) -> None:
        for server, batch in self._by_server(keys).items():
            if server.dead_until:
                continue
            with contextlib.suppress(Exception):
                await self._aconn(server).request(_delete_noreply(batch), _AsyncConn.nothing)

    async def aput(self, key: Key, value: Any, ttl: float) -> None:
        """Awaitable :meth:`put` (native asyncio)."""
        ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        payload = self._encode(key, encoded, value, ttl)
        if not self._usable(server):
            self._errors += 1
            return
        try:
            conn = self._aconn(server)
            gen = await self._ageneration(server, conn)
            stored = await self._astore_payload(payload, key, encoded, ttl, raw)
            if stored is None:
                return
            item, flags = stored
            command = _set_command(b"set", raw, flags, self._exptime(ttl), gen + item)
            old_flags, reply = await conn.probe_and_send(raw, command)
        except Exception as exc:
            self._fault(server, exc, "a set")
            return
        self._alive(server)
        pages = self._stored(raw, reply, old_flags, flags)
        if pages:
            await self._adrop_pages(pages)

    async def aputMulti(self, items: Iterable[tuple[Key, Any]] | dict, ttl: float) -> None:
        """Awaitable :meth:`putMulti` (native asyncio)."""
        ttl = check_ttl(ttl)
        by_server, big = self._plan_put_many(items, ttl)
        exptime = self._exptime(ttl)
        for server, batch in by_server.items():
            if not self._usable(server):
                self._errors += len(batch)
                continue
            try:
                conn = self._aconn(server)
                gen = await self._ageneration(server, conn)
                replies = await conn.probe_and_set_many(batch, exptime, gen)
            except Exception as exc:
                self._errors += len(batch) - 1
                self._fault(server, exc, "a multi-set")
                continue
            self._alive(server)
            pages = self._put_many_done(batch, replies)
            if pages:
                await self._adrop_pages(pages)
        for key, value in big:
            await self.aput(key, value, ttl)

    async def aadd(self, key: Key, value: Any, ttl: float) -> bool:
        """Awaitable :meth:`add` (native asyncio)."""
        ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        payload = self._encode(key, encoded, value, ttl)
        if not self._usable(server):
            self._errors += 1
            return False
        exptime = self._exptime(ttl)
        try:
            conn = self._aconn(server)
            stored = await self._astore_payload(payload, key, encoded, ttl, raw)
            if stored is None:
                return False
            item, flags = stored
            for _ in range(_CAS_ATTEMPTS):
                gen = await self._ageneration(server, conn)
                if await conn.store(b"add", raw, gen + item, exptime, flags=flags):
                    self._sets += 1
                    return True
                # Something is there: replace it only if it is stale, foreign or invalid.
                found = await conn.gets_many([raw, self._gen_key])
                gen, cas, entry = self._from_gets(key, raw, encoded, server, found)
                if cas is None:
                    continue
                if entry is not None and entry[1] > time.time():
                    if type(entry[0]) is not PageManifest:
                        return False
                    if await self._aread_pages(key, encoded, entry[0]) is not NONE:
                        return False
                if await conn.store(b"cas", raw, gen + item, exptime, cas, flags):
                    self._sets += 1
                    if entry is not None and type(entry[0]) is PageManifest:
                        await self._adrop_pages(self._old_pages(raw, entry[0].flags, flags))
                    return True
        except Exception as exc:
            self._fault(server, exc, "an add")
            return False
        self._alive(server)
        return False

    async def adelete(self, key: Key) -> None:
        """Awaitable :meth:`delete` (native asyncio)."""
        raw, _, server = self._locate(key)
        if not self._usable(server):
            self._errors += 1
            return
        try:
            old_flags, _ = await self._aconn(server).probe_and_send(raw, b"delete " + raw + b"\r\n")
        except Exception as exc:
            self._fault(server, exc, "a delete")
            return
        self._alive(server)
        if old_flags:
            await self._adrop_pages(self._old_pages(raw, old_flags, 0))

    async def _aupdate_expiry(self, key: Key, new_ttl: Callable[[float], float], what: str) -> bool:
        raw, encoded, server = self._locate(key)
        if not self._usable(server):
            self._errors += 1
            return False
        try:
            conn = self._aconn(server)
            for _ in range(_CAS_ATTEMPTS):
                found = await conn.gets_many([raw, self._gen_key])
                gen, cas, entry = self._from_gets(key, raw, encoded, server, found)
                if entry is None:
                    return False
                item, exptime, flags = self._resigned(key, encoded, gen, entry, new_ttl)
                if flags and not await self._atouch_pages(entry[0], exptime):
                    return False
                stored = await conn.store(b"cas", raw, item, exptime, cas, flags)
                if stored:
                    return True
                if stored is None:  # deleted meanwhile
                    return False
        except Exception as exc:
            self._fault(server, exc, what)
            return False
        self._alive(server)
        return False

    async def _atouch_pages(self, manifest: PageManifest, exptime: int) -> bool:
        for page_key in manifest.page_keys(self._internal_prefix):
            server = self._ring.get_node(page_key)
            if not self._usable(server):
                return False
            reply = await self._aconn(server).command(
                b"touch %s %d" % (page_key, exptime and exptime + 1)
            )
            if reply != b"TOUCHED":
                return False
        return True

    async def aupdate(self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None) -> Any:
        """Awaitable :meth:`update` (native asyncio); ``fn`` may also be a coroutine function.

        While a contender backs off, it awaits, so the event loop keeps running.
        """
        return (await self.aupdateTtl(key, fn, ttl))[0]

    async def aupdateTtl(
        self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """Awaitable :meth:`updateTtl` (native asyncio): ``(new value, ttl_left)``."""
        if ttl is not None:
            ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        if not self._usable(server):
            self._errors += 1
            raise CacheMissError(key)
        conn = self._aconn(server)
        for attempt in range(_UPDATE_ATTEMPTS):
            try:
                found = await conn.gets_many([raw, self._gen_key])
            except Exception as exc:
                self._fault(server, exc, "an update")
                raise CacheMissError(key) from exc
            self._alive(server)
            gen, cas, value, expires, now = self._update_entry(key, raw, encoded, server, found)
            old_flags = 0
            if type(value) is PageManifest:
                old_flags = value.flags
                value = await self._aread_pages(key, encoded, value)
                if value is NONE:
                    raise CacheMissError(key)
            new = fn(value)
            if inspect.isawaitable(new):
                new = await new
            new_ttl = expires - now if ttl is None else ttl
            payload = self._encode(key, encoded, new, new_ttl)
            written = await self._astore_payload(payload, key, encoded, new_ttl, raw)
            if written is None:  # a page could not be written (counted)
                raise CacheMissError(key)
            item, flags = written
            try:
                stored = await conn.store(
                    b"cas", raw, gen + item, self._exptime(new_ttl), cas, flags
                )
            except Exception as exc:
                self._fault(server, exc, "an update")
                raise CacheMissError(key) from exc
            if stored:
                self._sets += 1
                if old_flags:
                    await self._adrop_pages(self._old_pages(raw, old_flags, flags))
                return new, new_ttl
            if stored is None:  # deleted meanwhile
                raise CacheMissError(key)
            await asyncio.sleep(_update_backoff(attempt))
        raise _update_lost(key)

    async def arenew(self, key: Key, ttl: float) -> bool:
        """Awaitable :meth:`renew` (native asyncio)."""
        ttl = check_ttl(ttl)
        return await self._aupdate_expiry(key, lambda _left: ttl, "a renew")

    async def aexpire(self, key: Key) -> None:
        """Awaitable :meth:`expire` (native asyncio)."""
        await self._aupdate_expiry(key, lambda left: min(left, 0.0), "an expire")

    async def aclear(self) -> None:
        """Awaitable :meth:`clear` (native asyncio)."""
        for server in self._ring.nodes:
            record = os.urandom(_GEN_SIZE)
            try:
                await self._aconn(server).store(b"set", self._gen_key, record, 0)
            except Exception as exc:
                self._fault(server, exc, "a clear")
                continue
            _note_record(server, record)
            self._alive(server)

    # ---- introspection ------------------------------------------------------------------

    def _server_stats(self) -> list[dict[bytes, Any]]:
        result = []
        for server in self._ring.nodes:
            if not self._usable(server):
                continue
            try:
                result.append(server.client.stats())
            except Exception as exc:
                self._fault(server, exc, "stats")
        return result

    @property
    def capacity(self) -> int:
        """Total memory of the reachable servers, in bytes."""
        return sum(int(s.get(b"limit_maxbytes", 0)) for s in self._server_stats())

    @property
    def usage(self) -> int:
        """Bytes used on the reachable servers (every namespace)."""
        return sum(int(s.get(b"bytes", 0)) for s in self._server_stats())

    @property
    def stats(self) -> CacheStats:
        """Client-side counters (evictions are the servers' business, reported as 0)."""
        return CacheStats(self._hits, self._misses, self._sets, 0, self._errors)

    def close(self) -> None:
        """Stop the refresher thread and close every connection."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._ring_lock:
            for server in [*self._servers.values(), *(s for _, s in self._retired)]:
                server.close()
            self._retired = []

    def __repr__(self) -> str:
        return f"<MemcachedClient servers={self.servers!r} namespace={self.namespace!r}>"
