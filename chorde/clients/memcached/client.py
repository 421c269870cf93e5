"""MemcachedClient: each operation written once, as a generator of calls, run by either driver.

An operation (``_lookup``, ``_put``, ``_update`` ...) maps keys, encodes and decodes payloads,
plans pages, follows generations and handles faults; for I/O it yields a call (see
:mod:`.calls`) with a request from :mod:`.protocol`. The blocking methods run it with
:func:`.blocking.run`, the awaitable ones with :func:`.aio.run`. See the package docstring for
what the client stores and how.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from chorde.clients._pages import PageManifest, assemble
from chorde.clients.base import BaseCacheClient, CacheStats, Key, check_ttl
from chorde.clients.memcached import protocol
from chorde.clients.memcached.aio import run as _arun
from chorde.clients.memcached.blocking import run as _run
from chorde.clients.memcached.calls import AWAIT, BATCH, IO, SLEEP, Op
from chorde.clients.memcached.protocol import (
    STATS_REQUEST,
    CasValues,
    Line,
    Stats,
    Values,
    check,
    lines,
    old_pages,
    probe,
    probed_flags,
    store,
    store_result,
)
from chorde.clients.memcached.servers import (
    Address,
    Server,
    ServerSet,
    ServerSpec,
    dns_discovery,
    parse_server,
)
from chorde.errors import CacheMissError, ConfigurationError
from chorde.keys import memcache_key
from chorde.sentinel import NONE
from chorde.serialization import InvalidPayload, RateLimitedLog, Serializer

__all__ = ["MemcachedClient"]

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
# Bound of the per-client memo of str keys' memcached keys (cleared, not evicted, when full).
_KEY_MEMO_SIZE = 8192

Entry = tuple[Any, float]


def _note_record(server: Server, record: bytes | None) -> bytes:
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


class MemcachedClient(BaseCacheClient):
    """A shared cache on one or more memcached servers; see the package docstring.

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
        # The end of a single get's request: the generation is read in the same round trip.
        self._get_tail = b" " + self._gen_key + b"\r\n"
        self._log = RateLimitedLog(logger, interval=_LOG_INTERVAL)
        self._hits = self._misses = self._sets = self._errors = 0
        self._key_memo: dict[str, tuple[bytes, bytes]] = {}

        self._discovery = dns_discovery(
            specs,
            dns=dns,
            resolver=resolver,
            nameservers=nameservers,
            timeout=max(self.connect_timeout, 1.0),
            min_interval=dns_min_interval,
            max_interval=dns_max_interval,
        )
        self._servers = ServerSet(
            self._discover,
            connect_timeout=self.connect_timeout,
            timeout=self.timeout,
            retry_interval=self.retry_interval,
            points_per_node=points_per_node,
            log=self._log,
        )
        self._servers.start()

    # ---- server list -------------------------------------------------------------------

    def _discover(self) -> tuple[list[Address] | None, float | None]:
        """The servers to use now (None: keep the current ones), and when to ask again."""
        return self._discovery()

    @property
    def servers(self) -> list[str]:
        """The servers currently on the ring, as ``host:port``."""
        return self._servers.names

    def refresh(self) -> None:
        """Re-resolve the server list now (it is refreshed on a schedule anyway)."""
        self._servers.refresh()

    # ---- helpers ------------------------------------------------------------------------

    def _fault(self, server: Server, exc: BaseException, what: str) -> None:
        self._errors += 1
        server.failed(exc, what)

    def _bad_payload(self, key: Key, exc: Exception) -> None:
        self._errors += 1
        self._log.warning("chorde: dropping an invalid memcached payload for %r: %s", key, exc)

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

    def _locate(self, key: Key) -> tuple[bytes, bytes, Server]:
        raw, encoded = self._map_key(key)
        return raw, encoded, self._servers.ring.get_node(raw)

    def _by_server(self, keys: list[bytes]) -> dict[Server, list[bytes]]:
        """``keys`` grouped by the server each belongs to, in order."""
        ring = self._servers.ring
        by_server: dict[Server, list[bytes]] = {}
        for key in keys:
            by_server.setdefault(ring.get_node(key), []).append(key)
        return by_server

    def _exptime(self, ttl: float) -> int:
        """memcached's expiry for an entry logically alive ``ttl`` more seconds."""
        if ttl == math.inf:
            return 0
        seconds = max(1, math.ceil(ttl + self.stale_grace))
        if seconds > _RELATIVE_EXPTIME_MAX:
            return int(time.time()) + seconds
        return seconds

    def _encode(self, key: Key, encoded: bytes, value: Any, ttl: float) -> bytes:
        try:
            return self._serializer.dumps(value, key=encoded, expires=time.time() + ttl)
        except Exception as exc:
            exc.add_note(f"while serializing the value for cache key {key!r}")
            raise

    def _decode(self, key: Key, encoded: bytes, data: bytes | None, server: Server) -> Any:
        """``(value_or_manifest, expires)`` from a stored item, or None for a miss."""
        if data is None or not data.startswith(server.gen):
            return None
        try:
            entry = self._serializer.loads(data, key=encoded, offset=_GEN_SIZE)
        except InvalidPayload as exc:
            self._bad_payload(key, exc)
            return None
        if server.horizon and entry[1] <= server.horizon:
            return None
        return entry

    def _from_gets(
        self, key: Key, raw: bytes, encoded: bytes, server: Server, found: dict[bytes, Any]
    ) -> tuple[bytes, int | None, Entry | None]:
        """What a ``gets`` of an entry and the generation found: ``(generation, cas,
        (value or manifest, expires))``; cas None if absent, the entry None if absent or
        invalid (stale entries are returned)."""
        gen = _note_record(server, found.get(self._gen_key, (None,))[0])
        item = found.get(raw)
        if item is None:
            return gen, None, None
        return gen, item[1], self._decode(key, encoded, item[0], server)

    def _stored(self, raw: bytes, reply: bytes, old_flags: int, flags: int) -> list[bytes]:
        """Count a ``set``'s reply; return the pages of the paged item it replaced, if any.

        ``old_flags`` are the replaced item's (probed in the same round trip), ``flags``
        the new item's: pages shared by both (a rewrite under the same token) are kept.
        """
        if reply != b"STORED":
            self._errors += 1
            return []
        self._sets += 1
        return old_pages(self._internal_prefix, raw, old_flags, flags) if old_flags else []

    # ---- shared steps (generators, run inside the operations) ----------------------------

    def _generation(self, server: Server) -> Op[bytes]:
        """The server's current generation, fetched if this client never saw it."""
        if server.record is None:
            gen_key = self._gen_key
            found = yield (IO, server, protocol.get([gen_key]), Values())
            return _note_record(server, found.get(gen_key))
        return server.gen

    def _gets(self, server: Server, raw: bytes) -> Op[dict[bytes, Any]]:
        """``gets`` of ``raw`` and the generation record, in one round trip."""
        request = protocol.gets([raw, self._gen_key])
        return (yield (IO, server, request, CasValues()))

    def _store(self, server: Server, command: bytes, *args: Any, cas: int | None = None) -> Op:
        """A ``set``/``add``/``cas`` of ``(key, flags, exptime, value parts)``: as
        :func:`~.protocol.store_result`."""
        reply = yield (IO, server, store(command, *args, cas=cas), Line())
        return store_result(reply)

    def _item(
        self, payload: bytes, key: Key, encoded: bytes, ttl: float, raw: bytes
    ) -> Op[tuple[bytes, int] | None]:
        """The item and flags to store under the key for ``payload``: the payload itself, or
        when it is too big for one item, the manifest of its pages, written first; None if a
        page could not be written (counted)."""
        if len(payload) + _GEN_SIZE <= self._page_size:
            return payload, 0
        exptime = self._exptime(ttl)
        # Pages outlive their manifest by a second so it never points at expired pages.
        exptime = exptime and exptime + 1
        manifest, pages = protocol.plan_pages(payload, self._page_size, raw, self._internal_prefix)
        ring = self._servers.ring
        # One page per request: a multi-megabyte batch would be joined in memory.
        for page_key, page in pages:
            server = ring.get_node(page_key)
            if server.dead_until and not server.usable():
                self._errors += 1
                return None
            try:
                stored = yield from self._store(server, b"set", page_key, 0, exptime, (page,))
            except Exception as exc:
                self._fault(server, exc, "a page write")
                return None
            if not stored:
                self._errors += 1
                return None
        return self._encode(key, encoded, manifest, ttl), manifest.flags

    def _read_pages(self, key: Key, encoded: bytes, manifest: PageManifest) -> Op[Any]:
        """The value a manifest points to, or NONE if any page is missing or bad."""
        keys = manifest.page_keys(self._internal_prefix)
        by_server = self._by_server(keys)
        for server in by_server:
            if server.dead_until and not server.usable():
                self._errors += 1
                return NONE
        requests = [(s, protocol.get(batch), Values()) for s, batch in by_server.items()]
        found: dict[bytes, bytes] = {}
        for server, got in zip(by_server, (yield (BATCH, requests)), strict=True):
            if isinstance(got, BaseException):
                self._fault(server, got, "a page read")
                return NONE
            found.update(got)
        payload = assemble(manifest, keys, found)
        if payload is None:
            return NONE
        try:
            return self._serializer.loads(payload, key=encoded)[0]
        except InvalidPayload as exc:
            self._bad_payload(key, exc)
            return NONE

    def _drop_pages(self, keys: list[bytes]) -> Op[None]:
        """Best effort: delete pages nobody points to any more (else they age out)."""
        requests = [
            (server, protocol.delete_noreply(batch), None)
            for server, batch in self._by_server(keys).items()
            if not server.dead_until
        ]
        if requests:
            yield (BATCH, requests)  # failures ignored

    def _touch_pages(self, manifest: PageManifest, exptime: int) -> Op[bool]:
        ring = self._servers.ring
        for page_key in manifest.page_keys(self._internal_prefix):
            server = ring.get_node(page_key)
            if server.dead_until and not server.usable():
                return False
            try:
                reply = yield (IO, server, protocol.touch(page_key, exptime), Line())
            except Exception as exc:
                self._fault(server, exc, "a page touch")
                return False
            if reply != b"TOUCHED":
                return False
        return True

    # ---- reads --------------------------------------------------------------------------

    def _lookup(self, key: Key) -> Op[Entry | None]:
        """``(value, expires)`` for ``key``, or None on a miss (counted, but not as a hit)."""
        # The hot path: everything it needs is inlined.
        if type(key) is str:
            mapped = self._key_memo.get(key)
            raw, encoded = mapped if mapped is not None else self._map_key(key)
        else:
            raw, encoded = self._map_key(key)
        server = self._servers.ring.get_node(raw)
        if server.dead_until and not server.usable():
            self._errors += 1
            return None
        gen_key = self._gen_key
        try:
            found = yield (IO, server, b"get " + raw + self._get_tail, Values())
        except Exception as exc:
            self._fault(server, exc, "a get")
            return None
        record = found.get(gen_key, b"")
        if record != server.record:
            _note_record(server, record)
        entry = self._decode(key, encoded, found.get(raw), server)
        if entry is None:
            return None
        if type(entry[0]) is PageManifest:
            value = yield from self._read_pages(key, encoded, entry[0])
            return None if value is NONE else (value, entry[1])
        return entry

    def _live(self, key: Key, entry: Entry | None, default: Any) -> Any:
        """What ``get`` returns for the entry looked up (counting the hit or miss)."""
        if entry is not None and entry[1] > time.time():
            self._hits += 1
            return entry[0]
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default

    def _with_ttl(self, key: Key, entry: Entry | None, default: Any) -> tuple[Any, float]:
        """What ``getTtl`` returns for the entry looked up (counting the hit or miss)."""
        if entry is not None:
            self._hits += 1
            return entry[0], entry[1] - time.time()
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default, -1.0

    def _contained(self, key: Key, entry: Entry | None, ttl: float | None) -> bool:
        """What ``contains`` returns for the entry looked up (counted as ``getTtl`` does)."""
        if entry is None:
            self._misses += 1
            return False
        return self._with_ttl(key, entry, NONE)[1] > (ttl or 0)

    def get(self, key: Key, default: Any = NONE) -> Any:
        """Return the live value for ``key``, ``default`` if given, else raise a miss."""
        return self._live(key, _run(self._lookup(key)), default)

    async def aget(self, key: Key, default: Any = NONE) -> Any:
        """Awaitable :meth:`get` (native asyncio)."""
        return self._live(key, await _arun(self._lookup(key)), default)

    def getTtl(self, key: Key, default: Any = NONE) -> tuple[Any, float]:
        """Return ``(value, ttl_left)``; stale entries come back with ``ttl_left <= 0``."""
        return self._with_ttl(key, _run(self._lookup(key)), default)

    async def agetTtl(self, key: Key, default: Any = NONE) -> tuple[Any, float]:
        """Awaitable :meth:`getTtl` (native asyncio)."""
        return self._with_ttl(key, await _arun(self._lookup(key)), default)

    def contains(self, key: Key, ttl: float | None = None) -> bool:
        """True if ``key`` has a live entry (with more than ``ttl`` seconds left, if given)."""
        return self._contained(key, _run(self._lookup(key)), ttl)

    async def acontains(self, key: Key, ttl: float | None = None) -> bool:
        """Awaitable :meth:`contains` (native asyncio)."""
        return self._contained(key, await _arun(self._lookup(key)), ttl)

    def _plan_many(
        self, keys: list[Key]
    ) -> tuple[list[tuple[bytes, bytes]], list[Server], dict[Server, list[bytes]]]:
        """Mapped keys, their servers, and the memcached keys to ask each server for."""
        memo_get = self._key_memo.get
        mapped = [memo_get(key) if type(key) is str else None for key in keys]
        if None in mapped:
            map_key = self._map_key
            for i, m in enumerate(mapped):
                if m is None:
                    mapped[i] = map_key(keys[i])
        ring = self._servers.ring
        if len(ring) == 1:
            # One server (the common local setup): no grouping.
            only = ring.get_node(b"")
            return mapped, [only] * len(keys), {only: [m[0] for m in mapped]}
        servers = []
        by_server: dict[Server, list[bytes]] = {}
        for raw, _ in mapped:
            server = ring.get_node(raw)
            servers.append(server)
            batch = by_server.get(server)
            if batch is None:
                by_server[server] = [raw]
            else:
                batch.append(raw)
        return mapped, servers, by_server

    def _fetch_many(self, by_server: dict[Server, list[bytes]]) -> Op[dict[bytes, bytes]]:
        """The items found for the keys of each server: one round trip per server, together."""
        gen_key = self._gen_key
        asked = []
        for server, raws in by_server.items():
            if server.dead_until and not server.usable():
                self._errors += len(raws)
                continue
            raws.append(gen_key)
            asked.append((server, protocol.get(raws), Values()))
        found: dict[bytes, bytes] = {}
        if not asked:
            return found
        for (server, _, _), got in zip(asked, (yield (BATCH, asked)), strict=True):
            if isinstance(got, BaseException):
                self._fault(server, got, "a multi-get")
                continue
            _note_record(server, got.pop(gen_key, None))
            if found:
                found.update(got)
            else:
                found = got
        return found

    def _multi(self, keys: Iterable[Key], default: Any, with_ttl: bool) -> Op[list]:
        """getMulti (``with_ttl`` False) or getTtlMulti: the ``(key, ...)`` pairs."""
        keys = list(keys)
        mapped, servers, by_server = self._plan_many(keys)
        found = yield from self._fetch_many(by_server)
        loads = self._serializer.loads
        manifest_type = PageManifest
        now = time.time()
        miss = (default, -1.0) if with_ttl else default
        hits = 0
        result: list[tuple[Key, Any]] = []
        append = result.append
        # All keys on one server (the common case): its generation and horizon hoisted.
        single = next(iter(by_server)) if len(by_server) == 1 else None
        if single is not None:
            gen, horizon = single.gen, single.horizon
            # An entry is a miss when it expired by the purge horizon (or, for getMulti,
            # by now): one comparison per key.
            floor = (horizon or -math.inf) if with_ttl else max(horizon, now)
        for key, (raw, encoded), server in zip(keys, mapped, servers, strict=True):
            data = found.get(raw)
            if single is None:
                gen, horizon = server.gen, server.horizon
                floor = (horizon or -math.inf) if with_ttl else max(horizon, now)
            # (A server that did not answer contributed nothing to ``found``.)
            if data is None or not data.startswith(gen):
                append((key, miss))
                continue
            try:
                value, expires = loads(data, key=encoded, offset=_GEN_SIZE)
            except InvalidPayload as exc:
                self._bad_payload(key, exc)
                append((key, miss))
                continue
            if expires <= floor:
                append((key, miss))
                continue
            if type(value) is manifest_type:
                value = yield from self._read_pages(key, encoded, value)
                if value is NONE:
                    append((key, miss))
                    continue
            hits += 1
            append((key, (value, expires - now) if with_ttl else value))
        self._hits += hits
        self._misses += len(keys) - hits
        return result

    def getTtlMulti(self, keys: Iterable[Key], default: Any = NONE) -> Iterator[tuple[Key, Any]]:
        """Yield ``(key, (value, ttl_left))``; one round trip per server involved."""
        return iter(_run(self._multi(keys, default, True)))

    async def agetTtlMulti(
        self, keys: Iterable[Key], default: Any = NONE
    ) -> list[tuple[Key, tuple[Any, float]]]:
        """Awaitable :meth:`getTtlMulti`, returning a list of pairs (native asyncio)."""
        return await _arun(self._multi(keys, default, True))

    def getMulti(self, keys: Iterable[Key], default: Any = NONE) -> Iterator[tuple[Key, Any]]:
        """Yield ``(key, value)``; misses and stale entries give ``default``."""
        return iter(_run(self._multi(keys, default, False)))

    async def agetMulti(self, keys: Iterable[Key], default: Any = NONE) -> list[tuple[Key, Any]]:
        """Awaitable :meth:`getMulti`, returning a list of pairs (native asyncio)."""
        return await _arun(self._multi(keys, default, False))

    # ---- writes -------------------------------------------------------------------------

    def _put(self, key: Key, value: Any, ttl: float) -> Op[None]:
        ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        payload = self._encode(key, encoded, value, ttl)
        if server.dead_until and not server.usable():
            self._errors += 1
            return
        try:
            gen = server.gen if server.record is not None else (yield from self._generation(server))
            if len(payload) + _GEN_SIZE <= self._page_size:  # (the hot path: no paging)
                item, flags = payload, 0
            else:
                stored = yield from self._item(payload, key, encoded, ttl, raw)
                if stored is None:
                    return
                item, flags = stored
            # The old item's flags come back in the same round trip: were it paged, its
            # pages are deleted rather than left to age out.
            request = probe(raw) + store(b"set", raw, flags, self._exptime(ttl), (gen, item))
            probed, reply = yield (IO, server, request, lines(2))
            check(reply)
        except Exception as exc:
            self._fault(server, exc, "a set")
            return
        pages = self._stored(raw, reply, probed_flags(probed), flags)
        if pages:
            yield from self._drop_pages(pages)

    def put(self, key: Key, value: Any, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; dropped (and counted) if the server is down."""
        _run(self._put(key, value, ttl))

    async def aput(self, key: Key, value: Any, ttl: float) -> None:
        """Awaitable :meth:`put` (native asyncio)."""
        await _arun(self._put(key, value, ttl))

    def _plan_put_many(
        self, items: Iterable[tuple[Key, Any]] | dict, ttl: float
    ) -> tuple[dict[Server, dict[bytes, bytes]], list[tuple[Key, Any]]]:
        """The payloads to set on each server, and the pairs too big for a batch (paged)."""
        if isinstance(items, dict):
            items = items.items()
        by_server: dict[Server, dict[bytes, bytes]] = {}
        big = []
        for key, value in items:
            raw, encoded, server = self._locate(key)
            payload = self._encode(key, encoded, value, ttl)
            if len(payload) + _GEN_SIZE > self._page_size:
                big.append((key, value))
                continue
            by_server.setdefault(server, {})[raw] = payload
        return by_server, big

    def _put_many(self, items: Iterable[tuple[Key, Any]] | dict, ttl: float) -> Op[None]:
        ttl = check_ttl(ttl)
        by_server, big = self._plan_put_many(items, ttl)
        exptime = self._exptime(ttl)
        for server, batch in by_server.items():
            if server.dead_until and not server.usable():
                self._errors += len(batch)
                continue
            try:
                gen = yield from self._generation(server)
                # Each item's old flags come back in the same round trip (see put).
                request = protocol.probe_set_many(batch, exptime, gen)
                answers = yield (IO, server, request, lines(2 * len(batch)))
            except Exception as exc:
                self._errors += len(batch) - 1
                self._fault(server, exc, "a multi-set")
                continue
            pages: list[bytes] = []
            for i, raw in enumerate(batch):
                pages += self._stored(raw, answers[2 * i + 1], probed_flags(answers[2 * i]), 0)
            if pages:
                yield from self._drop_pages(pages)
        for key, value in big:
            yield from self._put(key, value, ttl)

    def putMulti(self, items: Iterable[tuple[Key, Any]] | dict, ttl: float) -> None:
        """Store many pairs with one ttl; one round trip per server (big values aside)."""
        _run(self._put_many(items, ttl))

    async def aputMulti(self, items: Iterable[tuple[Key, Any]] | dict, ttl: float) -> None:
        """Awaitable :meth:`putMulti` (native asyncio)."""
        await _arun(self._put_many(items, ttl))

    def _add(self, key: Key, value: Any, ttl: float) -> Op[bool]:
        ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        payload = self._encode(key, encoded, value, ttl)
        if server.dead_until and not server.usable():
            self._errors += 1
            return False
        exptime = self._exptime(ttl)
        try:
            stored = yield from self._item(payload, key, encoded, ttl, raw)
            if stored is None:
                return False
            item, flags = stored
            for _ in range(_CAS_ATTEMPTS):
                gen = yield from self._generation(server)
                if (yield from self._store(server, b"add", raw, flags, exptime, (gen, item))):
                    self._sets += 1
                    return True
                # Something is there: replace it only if it is stale, foreign or invalid.
                found = yield from self._gets(server, raw)
                gen, cas, entry = self._from_gets(key, raw, encoded, server, found)
                if cas is None:
                    continue
                if entry is not None and entry[1] > time.time():
                    if type(entry[0]) is not PageManifest:
                        return False
                    if (yield from self._read_pages(key, encoded, entry[0])) is not NONE:
                        return False
                args = (raw, flags, exptime, (gen, item))
                if (yield from self._store(server, b"cas", *args, cas=cas)):
                    self._sets += 1
                    if entry is not None and type(entry[0]) is PageManifest:
                        old = old_pages(self._internal_prefix, raw, entry[0].flags, flags)
                        yield from self._drop_pages(old)
                    return True
        except Exception as exc:
            self._fault(server, exc, "an add")
        return False

    def add(self, key: Key, value: Any, ttl: float) -> bool:
        """Store only if ``key`` has no live entry; atomic across clients (memcached add/cas)."""
        return _run(self._add(key, value, ttl))

    async def aadd(self, key: Key, value: Any, ttl: float) -> bool:
        """Awaitable :meth:`add` (native asyncio)."""
        return await _arun(self._add(key, value, ttl))

    def _delete(self, key: Key) -> Op[None]:
        raw, _, server = self._locate(key)
        if server.dead_until and not server.usable():
            self._errors += 1
            return
        try:
            probed, reply = yield (IO, server, probe(raw) + protocol.delete(raw), lines(2))
            check(reply)
        except Exception as exc:
            self._fault(server, exc, "a delete")
            return
        old_flags = probed_flags(probed)
        if old_flags:
            yield from self._drop_pages(old_pages(self._internal_prefix, raw, old_flags, 0))

    def delete(self, key: Key) -> None:
        """Remove ``key`` (and the pages of a paged value, best effort)."""
        _run(self._delete(key))

    async def adelete(self, key: Key) -> None:
        """Awaitable :meth:`delete` (native asyncio)."""
        await _arun(self._delete(key))

    def _update_expiry(self, key: Key, new_ttl: Callable[[float], float], what: str) -> Op[bool]:
        """gets/cas loop re-signing the entry of ``key`` with a new logical ttl."""
        raw, encoded, server = self._locate(key)
        if server.dead_until and not server.usable():
            self._errors += 1
            return False
        try:
            for _ in range(_CAS_ATTEMPTS):
                found = yield from self._gets(server, raw)
                gen, cas, entry = self._from_gets(key, raw, encoded, server, found)
                if entry is None:
                    return False
                value, expires = entry
                ttl = new_ttl(expires - time.time())
                flags = value.flags if type(value) is PageManifest else 0
                exptime = self._exptime(ttl)
                if flags and not (yield from self._touch_pages(value, exptime and exptime + 1)):
                    return False
                item = self._encode(key, encoded, value, ttl)
                args = (raw, flags, exptime, (gen, item))
                stored = yield from self._store(server, b"cas", *args, cas=cas)
                if stored:
                    return True
                if stored is None:  # deleted meanwhile
                    return False
        except Exception as exc:
            self._fault(server, exc, what)
        return False

    def renew(self, key: Key, ttl: float) -> bool:
        """Give an existing entry (stale or not) ``ttl`` more seconds; False if absent."""
        ttl = check_ttl(ttl)
        return _run(self._update_expiry(key, lambda _left: ttl, "a renew"))

    async def arenew(self, key: Key, ttl: float) -> bool:
        """Awaitable :meth:`renew` (native asyncio)."""
        ttl = check_ttl(ttl)
        return await _arun(self._update_expiry(key, lambda _left: ttl, "a renew"))

    def expire(self, key: Key) -> None:
        """Mark the entry stale now; ``getTtl`` still returns it for ``stale_grace`` seconds."""
        _run(self._update_expiry(key, _stale, "an expire"))

    async def aexpire(self, key: Key) -> None:
        """Awaitable :meth:`expire` (native asyncio)."""
        await _arun(self._update_expiry(key, _stale, "an expire"))

    def _update(self, key: Key, fn: Callable[[Any], Any], ttl: float | None) -> Op[Entry]:
        if ttl is not None:
            ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        if server.dead_until and not server.usable():
            self._errors += 1
            raise CacheMissError(key)
        for attempt in range(_UPDATE_ATTEMPTS):
            try:
                found = yield from self._gets(server, raw)
            except Exception as exc:
                self._fault(server, exc, "an update")
                raise CacheMissError(key) from exc
            gen, cas, entry = self._from_gets(key, raw, encoded, server, found)
            now = time.time()
            if entry is None or entry[1] <= now:
                raise CacheMissError(key)
            value, expires = entry
            old_flags = 0
            if type(value) is PageManifest:
                old_flags = value.flags
                value = yield from self._read_pages(key, encoded, value)
                if value is NONE:
                    raise CacheMissError(key)
            new = fn(value)
            if inspect.isawaitable(new):
                new = yield (AWAIT, new)
            new_ttl = expires - now if ttl is None else ttl
            payload = self._encode(key, encoded, new, new_ttl)
            written = yield from self._item(payload, key, encoded, new_ttl, raw)
            if written is None:  # a page could not be written (counted)
                raise CacheMissError(key)
            item, flags = written
            args = (raw, flags, self._exptime(new_ttl), (gen, item))
            try:
                stored = yield from self._store(server, b"cas", *args, cas=cas)
            except Exception as exc:
                self._fault(server, exc, "an update")
                raise CacheMissError(key) from exc
            if stored:
                self._sets += 1
                if old_flags:
                    yield from self._drop_pages(
                        old_pages(self._internal_prefix, raw, old_flags, flags)
                    )
                return new, new_ttl
            if stored is None:  # deleted meanwhile
                raise CacheMissError(key)
            yield (SLEEP, _update_backoff(attempt))
        raise _update_lost(key)

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
        return _run(self._update(key, fn, ttl))

    async def aupdate(self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None) -> Any:
        """Awaitable :meth:`update` (native asyncio); ``fn`` may also be a coroutine function.

        While a contender backs off, it awaits, so the event loop keeps running.
        """
        return (await self.aupdateTtl(key, fn, ttl))[0]

    async def aupdateTtl(
        self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """Awaitable :meth:`updateTtl` (native asyncio): ``(new value, ttl_left)``."""
        return await _arun(self._update(key, fn, ttl))

    def _clear(self) -> Op[None]:
        for server in self._servers.ring.nodes:
            record = os.urandom(_GEN_SIZE)
            try:
                yield from self._store(server, b"set", self._gen_key, 0, 0, (record,))
            except Exception as exc:
                self._fault(server, exc, "a clear")
                continue
            _note_record(server, record)

    def clear(self) -> None:
        """Invalidate every entry of this namespace on every server (a new generation)."""
        _run(self._clear())

    async def aclear(self) -> None:
        """Awaitable :meth:`clear` (native asyncio)."""
        await _arun(self._clear())

    def _purge(self, timeout: float) -> Op[None]:
        horizon = time.time() - check_ttl(timeout, "timeout")
        for server in self._servers.ring.nodes:
            try:
                yield from self._raise_horizon(server, horizon)
            except Exception as exc:
                self._fault(server, exc, "a purge")

    def _raise_horizon(self, server: Server, horizon: float) -> Op[None]:
        gen_key = self._gen_key
        for _ in range(_CAS_ATTEMPTS):
            found = yield (IO, server, protocol.gets([gen_key]), CasValues())
            if gen_key not in found:
                record = _ZERO_GEN + _HORIZON.pack(horizon)
                if (yield from self._store(server, b"add", gen_key, 0, 0, (record,))):
                    _note_record(server, record)
                    return
                continue
            old, cas = found[gen_key]
            gen = _note_record(server, old)
            if server.horizon >= horizon:
                return
            record = gen + _HORIZON.pack(horizon)
            if (yield from self._store(server, b"cas", gen_key, 0, 0, (record,), cas=cas)):
                _note_record(server, record)
                return

    def purge(self, timeout: float = 0) -> None:
        """Hide, for every client of the namespace, entries expired over ``timeout`` s ago.

        memcached frees their memory itself once their server expiry (``stale_grace``
        after the logical one) passes; purging moves the purge horizon kept beside the
        generation, so ``getTtl`` stops returning them at once.
        """
        _run(self._purge(timeout))

    async def apurge(self, timeout: float = 0) -> None:
        """Awaitable :meth:`purge` (native asyncio)."""
        await _arun(self._purge(timeout))

    # ---- introspection ------------------------------------------------------------------

    def _server_stats(self) -> Op[list[dict[bytes, bytes]]]:
        result = []
        for server in self._servers.ring.nodes:
            if server.dead_until and not server.usable():
                continue
            try:
                result.append((yield (IO, server, STATS_REQUEST, Stats())))
            except Exception as exc:
                self._fault(server, exc, "stats")
        return result

    @property
    def capacity(self) -> int:
        """Total memory of the reachable servers, in bytes."""
        return sum(int(s.get(b"limit_maxbytes", 0)) for s in _run(self._server_stats()))

    @property
    def usage(self) -> int:
        """Bytes used on the reachable servers (every namespace)."""
        return sum(int(s.get(b"bytes", 0)) for s in _run(self._server_stats()))

    @property
    def stats(self) -> CacheStats:
        """Client-side counters (evictions are the servers' business, reported as 0)."""
        return CacheStats(self._hits, self._misses, self._sets, 0, self._errors)

    def close(self) -> None:
        """Stop the refresher thread and close every connection."""
        self._servers.close()

    def __repr__(self) -> str:
        return f"<MemcachedClient servers={self.servers!r} namespace={self.namespace!r}>"


def _stale(left: float) -> float:
    """The ttl :meth:`MemcachedClient.expire` gives an entry: none left."""
    return min(left, 0.0)
