"""MemcachedClient: each operation written once, as a generator of calls, run by either driver.

An operation (``_lookup``, ``_put``, ``_update`` ...) maps keys, encodes and decodes payloads,
plans pages, follows generations and handles faults; for I/O it yields a call (see
:mod:`.calls`) with a request from :mod:`.protocol`. The blocking methods run it with
:func:`.blocking.run`, the awaitable ones with :func:`.aio.run`. See the package docstring for
what the client stores and how.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from chorde.clients._pages import PageManifest, assemble
from chorde.clients.base import BaseCacheClient, CacheStats, Key, check_capacity, check_ttl
from chorde.clients.memcached import protocol
from chorde.clients.memcached.aio import run as _arun
from chorde.clients.memcached.blocking import run as _run
from chorde.clients.memcached.calls import BATCH, CALL, IO, PARALLEL, SLEEP, Op
from chorde.clients.memcached.protocol import (
    LINE,
    META,
    STATS_REQUEST,
    VALUES,
    CasValues,
    Line,
    Meta,
    Replies,
    ReplyError,
    Stats,
    Values,
    Version,
    check,
    lines,
    old_pages,
    probe,
    probed_flags,
    store,
    store_result,
)
from chorde.clients.memcached.servers import (
    UNKNOWN_STATE,
    Address,
    Server,
    ServerSet,
    ServerSpec,
    WriteLog,
    dns_discovery,
    parse_server,
)
from chorde.errors import CacheMissError, ConfigurationError
from chorde.keys import memcache_key, memoizable
from chorde.leases import BUSY, HIT, UNAVAILABLE, WON, LeaseRead
from chorde.sentinel import NONE
from chorde.serialization import InvalidPayload, RateLimitedLog, Serializer

__all__ = ["MemcachedClient"]

logger = logging.getLogger("chorde.clients.memcached")
T = TypeVar("T")

_GEN_SIZE = 8
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
# Keys deleted per round trip (a write log replayed).
_DELETE_BATCH = 256
# What the generation record and the values are signed for (see Serializer.bound).
_RECORD_CONTEXT = b"chorde memcached generation record"
_VALUE_CONTEXT = b"chorde memcached value\0"

Entry = tuple[Any, float]
#: A server's view of its generation record: see servers.UNKNOWN_STATE.
State = tuple[Any, Any, Any, float, Any]


def _update_backoff(attempt: int) -> float:
    """Seconds an update that lost a compare-and-swap race waits before its next attempt.

    Random, so contenders stop colliding in lockstep; growing a little with the attempts.
    """
    return random.random() * min(0.0005 * (attempt + 1), 0.01)


def _update_lost(key: Key) -> RuntimeError:
    return RuntimeError(
        f"update of cache key {key!r} lost {_UPDATE_ATTEMPTS} compare-and-swap races in a row"
    )


def _weakly(method: Callable[..., T]) -> Callable[..., T]:
    """``method``, without keeping its object alive (once that is gone, calling it raises
    ``ReferenceError``)."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> T:
        bound = ref()
        if bound is None:
            raise ReferenceError("the MemcachedClient is gone")
        return bound(*args)

    return call


def _one_or_all(ops: list[Op[Any]]) -> Op[list[Any]]:
    """Run ``ops`` together (one directly): what each returned, or the exception it raised."""
    if len(ops) != 1:
        return (yield (PARALLEL, ops))
    try:
        return [(yield from ops[0])]
    except Exception as exc:
        return [exc]


class MemcachedClient(BaseCacheClient):
    """A shared cache on one or more memcached servers; see the package docstring.

    ``servers`` is a list of ``"host:port"`` strings (or ``(host, port)`` tuples); the
    ``checksum_key`` (a secret, or a list of them for rotation: sign with the first, accept
    any) signs every value and is required. Other options:

    * ``namespace``: prefix of every memcached key; ``clear()`` clears only its namespace.
    * ``compress`` / ``compress_threshold``: zlib-compress payloads above the threshold.
    * ``timeout`` (default 1 s) bounds the time each call waits for servers, in all;
      ``connect_timeout`` (default 0.5 s) bounds one connect within it.
    * Down-marking: ``connect_retries`` (default 1): a connect that fails, or a connection
      that fails before the server answered anything, is tried again on a new connection
      this many times before the server is marked down (a timeout once connected marks it
      down at once); ``retry_interval`` (default 0.5 s): how often a down server is probed,
      from a thread of its own; ``write_log_size`` (default 10,000): writes remembered per
      down server, undone before it is used again (past that, the namespace's generation
      there is renewed).
    * ``pool_size`` (default 8): asyncio connections per server and event loop.
    * ``max_item_size``: the servers' item size limit (memcached ``-I``, default 1 MiB);
      bigger values are paged.
    * ``stale_grace``: seconds stale entries stay readable by ``getTtl`` (default 60).
    * ``lease_ttl`` (default 10 s): leases (:mod:`chorde.leases`): ``@cached`` computes a
      missing or stale entry once per cluster, the other callers waiting for its value; the
      winner keeps its lease for at least this long, and one that dies or hangs delays them
      by at most this rounded up to whole seconds, plus one (memcached's clock ticks whole
      seconds). 0 turns leases off (each process then computes on its own).
    * ``meta``: whether the servers speak memcached's meta commands (1.6+): None (default)
      asks each server once (``mn``); False never sends them (leases are then ``add``-ed
      lease keys, as on servers without them); True skips the question.
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
        retry_interval: float = 0.5,
        connect_retries: int = 1,
        write_log_size: int = 10_000,
        pool_size: int = 8,
        max_item_size: int = _ONE_MIB,
        stale_grace: float = 60.0,
        dns: bool | None = None,
        resolver: Any = None,
        nameservers: Sequence[str] | None = None,
        dns_min_interval: float = 1.0,
        dns_max_interval: float = 300.0,
        points_per_node: int = 160,
        lease_ttl: float = 10.0,
        meta: bool | None = None,
        **legacy: Any,
    ) -> None:
        if legacy:  # chorde 1.x's options: renamed ones mapped, the rest refused by name
            from chorde import _legacy

            renamed = _legacy.options("MemcachedClient", legacy)
            max_item_size = renamed.get("max_item_size", max_item_size)
            timeout = renamed.get("timeout", timeout)
            retry_interval = renamed.get("retry_interval", retry_interval)
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
        for name, count in (
            ("connect_retries", connect_retries),
            ("write_log_size", write_log_size),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigurationError(f"{name} must be an int >= 0, got {count!r}")
        check_capacity(pool_size, "pool_size")
        lease_ttl = check_ttl(lease_ttl, "lease_ttl")
        if not lease_ttl < math.inf:
            raise ConfigurationError(f"lease_ttl must be finite (0: no leases), got {lease_ttl!r}")
        if meta is not None and not isinstance(meta, bool):
            raise ConfigurationError(f"meta must be None, True or False, got {meta!r}")
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
        # The generation record is named after, and signed with, the oldest key of the list
        # alone: clients midway through a rotation ([new, old]) share it with those not yet
        # rotated ([old]), and an application with other secrets in the same namespace has a
        # record of its own. Each value is signed for its namespace and generation (see
        # _note_record), so it verifies nowhere else.
        oldest = checksum_key if isinstance(checksum_key, str | bytes) else checksum_key[-1]
        record_signer = Serializer(oldest)
        self._record_codec = record_signer.bound(_RECORD_CONTEXT)
        self._value_context = _VALUE_CONTEXT + namespace.encode() + b"\0"
        self.namespace = namespace
        self.connect_timeout = float(connect_timeout)
        self.timeout = float(timeout)
        self.retry_interval = float(retry_interval)
        self.stale_grace = float(stale_grace)
        #: Seconds a lease lasts at least (0: no leases).
        self.lease_ttl = float(lease_ttl)
        # memcached's clock ticks whole seconds, so an item given N seconds lives between N-1
        # and N: one second more lets a winner keep its lease for all of lease_ttl (a dead
        # winner's lease lapses within ceil(lease_ttl) + 1 s).
        self._lease_seconds = math.ceil(lease_ttl) + 1
        self._meta = meta
        self.max_item_size = max_item_size
        self._page_size = max_item_size - _ITEM_OVERHEAD
        self._internal_prefix = (namespace + "~").encode()
        self._gen_key = self._internal_prefix + b"gen." + record_signer.key_id.hex().encode()
        # The end of a single get's request: the generation is read in the same round trip.
        self._get_tail = b" " + self._gen_key + b"\r\n"
        self._log = RateLimitedLog(logger, interval=_LOG_INTERVAL)
        self._hits = self._misses = self._sets = self._errors = 0
        self._key_memo: dict[Key, tuple[bytes, bytes]] = {}

        self._discovery = dns_discovery(
            specs,
            dns=dns,
            resolver=resolver,
            nameservers=nameservers,
            timeout=max(self.connect_timeout, 1.0),
            min_interval=dns_min_interval,
            max_interval=dns_max_interval,
        )
        # The server set's threads (DNS refresher, probers) hold the client weakly, and stop
        # when it goes: a client dropped without close() leaves no thread behind.
        self._servers = ServerSet(
            _weakly(self._discover),
            connect_timeout=self.connect_timeout,
            timeout=self.timeout,
            retry_interval=self.retry_interval,
            connect_retries=connect_retries,
            pool_size=pool_size,
            write_log_size=write_log_size,
            replay=_weakly(self._replay),
            points_per_node=points_per_node,
            log=self._log,
        )
        self._servers.start()
        weakref.finalize(self, self._servers.close)

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

    def _fault(
        self, server: Server, exc: BaseException, what: str, *lost: Any, **undo: Any
    ) -> None:
        """Count and report a failed request; for a write, what it may have left unwritten
        (the arguments of :meth:`Server.failed`)."""
        self._errors += 1
        server.failed(exc, what, *lost, **undo)

    def _bad_payload(self, key: Key, exc: Exception) -> None:
        self._errors += 1
        self._log.warning("chorde: dropping an invalid memcached payload for %r: %s", key, exc)

    def _map_key(self, key: Key) -> tuple[bytes, bytes]:
        """``(memcached key, encoded key)`` of ``key``; str keys and tuples of str (the HTTP
        cache's) are memoized."""
        kind = type(key)
        if kind is str or (kind is tuple and memoizable(key)):
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

    def _encode(self, key: Key, encoded: bytes, value: Any, ttl: float, codec: Any) -> bytes:
        try:
            return codec.dumps(value, key=encoded, expires=time.time() + ttl)
        except Exception as exc:
            exc.add_note(f"while serializing the value for cache key {key!r}")
            raise

    def _decode(self, key: Key, encoded: bytes, data: bytes | None, state: State) -> Any:
        """``(value_or_manifest, expires)`` from a stored item, or None for a miss."""
        if data is None or not data.startswith(state[1]):
            return None
        try:
            entry = state[2].loads(data, key=encoded, offset=_GEN_SIZE)
        except InvalidPayload as exc:
            self._bad_payload(key, exc)
            return None
        horizon = state[3]
        if horizon and entry[1] <= horizon:
            return None
        return entry

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

    # ---- the generation record -----------------------------------------------------------

    def _new_record(self, server: Server, gen: bytes | None = None, horizon: float = 0.0) -> bytes:
        """A signed generation record for ``server``: ``gen`` (a new random one by default),
        the purge horizon (entries that expired before it are gone) and when the generation
        was made (never before the newest one seen there, so it is trusted)."""
        if gen is None:
            gen = os.urandom(_GEN_SIZE)
            made = max(time.time(), server.seen + 1e-3)
        else:
            made = server.seen
        return self._record_codec.dumps((gen, horizon, made), key=self._gen_key)

    def _note_record(self, server: Server, record: bytes | None) -> bool:
        """Adopt the generation record ``server`` answered with, if it verifies and is not
        older than one seen there before. False when it is absent or not trusted (forged,
        unsigned, replayed): the server's view is then unknown, so none of its entries is
        trusted until :meth:`_establish` settles a record."""
        if record is not None:
            if record == server.state[0]:
                return True
            try:
                (gen, horizon, made), _ = self._record_codec.loads(record, key=self._gen_key)
            except (InvalidPayload, TypeError, ValueError):
                gen = horizon = made = None
            if (
                type(gen) is bytes
                and len(gen) == _GEN_SIZE
                and type(horizon) is float
                and type(made) is float
                and made >= server.seen
            ):
                server.seen = made
                codec = self._serializer.bound(self._value_context + gen)
                expect = (protocol.value_block(self._gen_key, record), self._gen_key, record)
                server.state = (record, gen, codec, horizon, expect)
                return True
        server.state = UNKNOWN_STATE
        return False

    def _establish(self, server: Server) -> Op[State]:
        """Read the server's generation record and trust it if it verifies; else write a
        new one (``add`` where there is none, ``cas`` over one that does not verify, which
        is logged): everything of the namespace on the server from before is dropped."""
        gen_key = self._gen_key
        for _ in range(_CAS_ATTEMPTS):
            found = yield (IO, server, protocol.gets([gen_key]), CasValues())
            item = found.get(gen_key)
            record = self._new_record(server)
            if item is None:
                stored = yield from self._store(server, b"add", gen_key, 0, 0, (record,))
            elif self._note_record(server, item[0]):
                return server.state
            else:
                self._log.warning(
                    "chorde: memcached %s: the generation record of namespace %r is not "
                    "trusted (it does not verify, or is older than one seen before: forged "
                    "or replayed); replacing it, which drops the namespace's entries there",
                    server.name,
                    self.namespace,
                    kind=f"record {server.name}",
                )
                args = (gen_key, 0, 0, (record,))
                stored = yield from self._store(server, b"cas", *args, cas=item[1])
            if stored:
                self._note_record(server, record)
                return server.state
        raise ReplyError(f"the generation record on {server} keeps changing")

    def _generation(self, server: Server) -> Op[State]:
        """The server's view of the generation, settled first if this client has none."""
        state = server.state
        if state[2] is None:
            state = yield from self._establish(server)
        return state

    # ---- shared steps (generators, run inside the operations) ----------------------------

    def _gets(self, server: Server, raw: bytes) -> Op[dict[bytes, Any]]:
        """``gets`` of ``raw`` and the generation record, in one round trip."""
        request = protocol.gets([raw, self._gen_key])
        return (yield (IO, server, request, CasValues()))

    def _from_gets(
        self, key: Key, raw: bytes, encoded: bytes, server: Server, found: dict[bytes, Any]
    ) -> Op[tuple[State, int | None, Entry | None]]:
        """What a ``gets`` of an entry and the generation found: ``(generation view, cas,
        (value or manifest, expires))``; cas None if absent, the entry None if absent or
        invalid (stale entries are returned)."""
        gen_item = found.get(self._gen_key)
        if not self._note_record(server, None if gen_item is None else gen_item[0]):
            yield from self._establish(server)
        state = server.state
        item = found.get(raw)
        if item is None:
            return state, None, None
        return state, item[1], self._decode(key, encoded, item[0], state)

    def _store(self, server: Server, command: bytes, *args: Any, cas: int | None = None) -> Op:
        """A ``set``/``add``/``cas`` of ``(key, flags, exptime, value parts)``: as
        :func:`~.protocol.store_result`."""
        reply = yield (IO, server, store(command, *args, cas=cas), Line())
        return store_result(reply)

    def _item(
        self, payload: bytes, key: Key, encoded: bytes, ttl: float, raw: bytes, codec: Any
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
            if server.down:
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
        return self._encode(key, encoded, manifest, ttl, codec), manifest.flags

    def _read_pages(self, key: Key, encoded: bytes, manifest: PageManifest, codec: Any) -> Op[Any]:
        """The value a manifest points to, or NONE if any page is missing or bad."""
        keys = manifest.page_keys(self._internal_prefix)
        by_server = self._by_server(keys)
        for server in by_server:
            if server.down:
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
            return codec.loads(payload, key=encoded)[0]
        except InvalidPayload as exc:
            self._bad_payload(key, exc)
            return NONE

    def _drop_pages(self, keys: list[bytes]) -> Op[None]:
        """Best effort: delete pages nobody points to any more (else they age out)."""
        requests = [
            (server, protocol.delete_noreply(batch), None)
            for server, batch in self._by_server(keys).items()
            if not server.down
        ]
        if requests:
            yield (BATCH, requests)  # failures ignored

    def _touch_pages(self, manifest: PageManifest, exptime: int) -> Op[bool]:
        """Give every page of ``manifest`` the expiry ``exptime``; False if one is missing."""
        by_server = self._by_server(manifest.page_keys(self._internal_prefix))
        requests = []
        for server, keys in by_server.items():
            if server.down:
                return False
            touches = b"".join(protocol.touch(k, exptime) for k in keys)
            requests.append((server, touches, lines(len(keys))))
        for server, replies in zip(by_server, (yield (BATCH, requests)), strict=True):
            if isinstance(replies, BaseException):
                self._fault(server, replies, "a page touch")
                return False
            if any(reply != b"TOUCHED" for reply in replies):
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
        if server.down:
            self._errors += 1
            return None
        state = server.state
        reply = Values()
        reply.expect = state[4]  # (the record as last seen costs no parsing)
        try:
            found = yield (IO, server, b"get " + raw + self._get_tail, reply)
            record = found.get(self._gen_key)
            if record != state[0]:
                if not self._note_record(server, record):
                    yield from self._establish(server)
                    return None  # whatever is there is of no generation we trust
                state = server.state
        except Exception as exc:
            self._fault(server, exc, "a get")
            return None
        entry = self._decode(key, encoded, found.get(raw), state)
        if entry is None:
            return None
        if type(entry[0]) is PageManifest:
            value = yield from self._read_pages(key, encoded, entry[0], state[2])
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
        """The items found for the keys of each server: one round trip per server, together;
        nothing from a server whose generation record could not be trusted."""
        gen_key = self._gen_key
        asked = []
        for server, raws in by_server.items():
            if server.down:
                self._errors += len(raws)
                continue
            raws.append(gen_key)
            asked.append((server, protocol.get(raws), Values()))
        found: dict[bytes, bytes] = {}
        if not asked:
            return found
        if len(asked) == 1:
            try:
                results = [(yield (IO, *asked[0]))]
            except Exception as exc:
                results = [exc]
        else:
            results = yield (BATCH, asked)
        unsettled = []
        for (server, _, _), got in zip(asked, results, strict=True):
            if isinstance(got, BaseException):
                self._fault(server, got, "a multi-get")
                continue
            if not self._note_record(server, got.pop(gen_key, None)):
                unsettled.append(server)
                continue
            if found:
                found.update(got)
            else:
                found = got
        if unsettled:
            ops = [self._establish(server) for server in unsettled]
            for server, done in zip(unsettled, (yield from _one_or_all(ops)), strict=True):
                if isinstance(done, Exception):
                    self._fault(server, done, "a multi-get")
        return found

    def _multi(self, keys: Iterable[Key], default: Any, with_ttl: bool) -> Op[list]:
        """getMulti (``with_ttl`` False) or getTtlMulti: the ``(key, ...)`` pairs."""
        keys = list(keys)
        mapped, servers, by_server = self._plan_many(keys)
        found = yield from self._fetch_many(by_server)
        manifest_type = PageManifest
        now = time.time()
        miss = (default, -1.0) if with_ttl else default
        hits = 0
        result: list[tuple[Key, Any]] = []
        append = result.append
        # All keys on one server (the common case): its generation and horizon hoisted.
        single = next(iter(by_server)) if len(by_server) == 1 else None
        if single is not None:
            state = single.state
            if state[2] is None:  # (forgotten meanwhile: nothing can be trusted)
                found = {}
            gen, codec, horizon = state[1], state[2], state[3]
            # An entry is a miss when it expired by the purge horizon (or, for getMulti,
            # by now): one comparison per key.
            floor = (horizon or -math.inf) if with_ttl else max(horizon, now)
        for key, (raw, encoded), server in zip(keys, mapped, servers, strict=True):
            data = found.get(raw)
            # (A server that did not answer contributed nothing to ``found``.)
            if data is None:
                append((key, miss))
                continue
            if single is None:
                state = server.state
                gen, codec, horizon = state[1], state[2], state[3]
                floor = (horizon or -math.inf) if with_ttl else max(horizon, now)
                if codec is None:
                    append((key, miss))
                    continue
            if not data.startswith(gen):
                append((key, miss))
                continue
            try:
                value, expires = codec.loads(data, key=encoded, offset=_GEN_SIZE)
            except InvalidPayload as exc:
                self._bad_payload(key, exc)
                append((key, miss))
                continue
            if expires <= floor:
                append((key, miss))
                continue
            if type(value) is manifest_type:
                value = yield from self._read_pages(key, encoded, value, codec)
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
    #
    # A write that cannot be sent because its server is down is remembered by the server
    # (Server.missed), and one that fails is reported with its keys (_fault): either way the
    # key is deleted there before the server is read again (see Server and _replay).

    def _still(self, server: Server, state: State) -> Op[bool]:
        """Whether the generation ``state`` names is still the server's, after a write for it:
        a connection opened meanwhile (perhaps to a restarted server, without the record)
        makes the client read the record again (see Server.connected)."""
        if server.state is state:
            return True
        return (yield from self._generation(server))[1] == state[1]

    def _put(self, key: Key, value: Any, ttl: float, release: bytes | None = None) -> Op[bool]:
        """Store one value; whether the server stored it. ``release``: a lease key deleted
        in the same round trip (a text-protocol lease, see :meth:`_lease_read`)."""
        ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        if server.down and server.missed((raw,)):
            self._errors += 1
            return False
        state = server.state
        for _ in range(_CAS_ATTEMPTS):
            if state[2] is None:
                try:
                    state = yield from self._establish(server)
                except Exception as exc:
                    self._fault(server, exc, "a set", (raw,))
                    return False
            payload = self._encode(key, encoded, value, ttl, state[2])
            try:
                if len(payload) + _GEN_SIZE <= self._page_size:  # (the hot path: no paging)
                    item, flags = payload, 0
                else:
                    stored = yield from self._item(payload, key, encoded, ttl, raw, state[2])
                    if stored is None:
                        # The new value could not be written: the old one must not stay.
                        yield from self._delete_raw(server, raw)
                        return False
                    item, flags = stored
                # The old item's flags come back in the same round trip: were it paged, its
                # pages are deleted rather than left to age out.
                exptime = self._exptime(ttl)
                request = probe(raw) + store(b"set", raw, flags, exptime, (state[1], item))
                if release is None:
                    probed, reply = yield (IO, server, request, lines(2))
                else:
                    request += protocol.delete(release)
                    probed, reply, _ = yield (IO, server, request, lines(3))
                check(reply)
                still = server.state is state or (yield from self._still(server, state))
            except Exception as exc:
                self._fault(server, exc, "a set", (raw,))
                return False
            pages = self._stored(raw, reply, probed_flags(probed), flags)
            if pages:
                yield from self._drop_pages(pages)
            if still:
                return reply == b"STORED"
            state = server.state  # written for a generation gone: again, for the new one
        return False

    def put(self, key: Key, value: Any, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; dropped (and counted) if the server is down."""
        _run(self._put(key, value, ttl))

    async def aput(self, key: Key, value: Any, ttl: float) -> None:
        """Awaitable :meth:`put` (native asyncio)."""
        await _arun(self._put(key, value, ttl))

    def _put_many(self, items: Iterable[tuple[Key, Any]] | dict, ttl: float) -> Op[list[Key]]:
        """Store many pairs; return the keys not stored."""
        ttl = check_ttl(ttl)
        if isinstance(items, dict):
            items = items.items()
        by_server: dict[Server, list[tuple[Key, bytes, bytes, Any]]] = {}
        key_of: dict[bytes, Key] = {}
        for key, value in items:
            raw, encoded, server = self._locate(key)
            by_server.setdefault(server, []).append((key, raw, encoded, value))
            key_of[raw] = key
        failed: set[bytes] = set()
        for _ in range(_CAS_ATTEMPTS):
            for batch in by_server.values():  # (written again: their last write counts)
                failed.difference_update(raw for _, raw, _, _ in batch)
            used = yield from self._put_by_server(by_server, ttl, failed)
            # Servers that reconnected meanwhile: written again where the generation changed.
            moved = [server for server, state in used.items() if server.state is not state]
            if not moved:
                break
            checks = yield from _one_or_all([self._still(s, used[s]) for s in moved])
            again = {}
            for server, still in zip(moved, checks, strict=True):
                if isinstance(still, Exception):
                    raws = [raw for _, raw, _, _ in by_server[server]]
                    self._fault(server, still, "a multi-set", raws)
                    failed.update(raws)
                elif not still:
                    again[server] = by_server[server]
            if not again:
                break
            by_server = again
        else:
            for batch in by_server.values():  # (the generation kept moving under them)
                failed.update(raw for _, raw, _, _ in batch)
        return [key for raw, key in key_of.items() if raw in failed] if failed else []

    def _put_by_server(
        self,
        by_server: dict[Server, list[tuple[Key, bytes, bytes, Any]]],
        ttl: float,
        failed: set[bytes],
    ) -> Op[dict[Server, State]]:
        """Store ``(key, raw, encoded, value)`` entries, grouped by server; return the
        generation view each server's were written for. The entries not stored are added
        to ``failed``."""
        # Servers whose generation this client has not seen yet: settled first, together.
        unknown = [s for s in by_server if s.state[2] is None and not s.down]
        if unknown:
            settled = yield from _one_or_all([self._establish(s) for s in unknown])
            for server, done in zip(unknown, settled, strict=True):
                if isinstance(done, Exception):
                    batch = by_server[server]
                    self._errors += len(batch) - 1
                    self._fault(server, done, "a multi-set", [raw for _, raw, _, _ in batch])
        # Every value is serialized before anything is stored (a bad one raises first).
        sets = []
        batches: list[list[bytes]] = []
        big = []
        used = {}
        for server, batch in by_server.items():
            state = server.state
            if state[2] is None:  # down, or failed just above
                raws = dict.fromkeys(r for _, r, _, _ in batch)
                failed.update(raws)
                if server.down:
                    sets.append(self._set_many(server, state, raws))
                    batches.append(list(raws))
                continue
            payloads: dict[bytes, bytes] = {}
            for key, raw, encoded, value in batch:
                payload = self._encode(key, encoded, value, ttl, state[2])
                if len(payload) + _GEN_SIZE > self._page_size:
                    big.append((key, raw, value))
                else:
                    payloads[raw] = payload
            used[server] = state
            sets.append(self._set_many(server, state, payloads, self._exptime(ttl)))
            batches.append(list(payloads))
        for batch, done in zip(batches, (yield from _one_or_all(sets)), strict=True):
            if isinstance(done, Exception):  # (faults are handled within: not expected)
                logger.error("chorde: a multi-set failed", exc_info=done)
                done = batch
            failed.update(done)
        for key, raw, value in big:
            if not (yield from self._put(key, value, ttl)):
                failed.add(raw)
        return used

    def _set_many(
        self, server: Server, state: State, payloads: dict[bytes, Any], exptime: int = 0
    ) -> Op[list[bytes]]:
        """Store ``payloads`` (signed for ``state``) on ``server``, in one round trip;
        return the raw keys not stored."""
        if not payloads:
            return []
        if server.down and server.missed(payloads):
            self._errors += len(payloads)
            return list(payloads)
        if state[2] is None:  # (came back just now: nothing to sign for, the old must go)
            try:
                yield from self._delete_many(server, list(payloads))
            except Exception as exc:
                self._fault(server, exc, "a multi-set", payloads)
            return list(payloads)
        try:
            # Each item's old flags come back in the same round trip (see put).
            request = protocol.probe_set_many(payloads, exptime, state[1])
            answers = yield (IO, server, request, lines(2 * len(payloads)))
        except Exception as exc:
            self._errors += len(payloads) - 1
            self._fault(server, exc, "a multi-set", payloads)
            return list(payloads)
        pages: list[bytes] = []
        failed = []
        for i, raw in enumerate(payloads):
            reply = answers[2 * i + 1]
            if reply != b"STORED":
                failed.append(raw)
            pages += self._stored(raw, reply, probed_flags(answers[2 * i]), 0)
        if pages:
            yield from self._drop_pages(pages)
        return failed

    def putMulti(self, items: Iterable[tuple[Key, Any]] | dict, ttl: float) -> list[Key]:
        """Store many pairs with one ttl; one round trip per server (big values aside), the
        servers at the same time. Return the keys not stored (their server down or failing,
        logged), empty when all were."""
        return _run(self._put_many(items, ttl))

    async def aputMulti(self, items: Iterable[tuple[Key, Any]] | dict, ttl: float) -> list[Key]:
        """Awaitable :meth:`putMulti` (native asyncio)."""
        return await _arun(self._put_many(items, ttl))

    def _add(self, key: Key, value: Any, ttl: float) -> Op[bool]:
        ttl = check_ttl(ttl)
        raw, encoded, server = self._locate(key)
        if server.down and server.missed((raw,)):
            self._errors += 1
            return False
        exptime = self._exptime(ttl)
        try:
            state = yield from self._generation(server)
        except Exception as exc:
            self._fault(server, exc, "an add", (raw,))
            return False
        payload = self._encode(key, encoded, value, ttl, state[2])
        signed_for = None
        try:
            for _ in range(_CAS_ATTEMPTS):
                state = yield from self._generation(server)
                if signed_for is not state[2]:
                    if signed_for is not None:  # a new generation meanwhile: sign for it
                        payload = self._encode(key, encoded, value, ttl, state[2])
                    stored = yield from self._item(payload, key, encoded, ttl, raw, state[2])
                    if stored is None:
                        return False
                    item, flags = stored
                    signed_for = state[2]
                if (yield from self._store(server, b"add", raw, flags, exptime, (state[1], item))):
                    if (yield from self._still(server, state)):
                        self._sets += 1
                        return True
                    continue  # written for a generation gone: again, for the new one
                # Something is there: replace it only if it is stale, foreign or invalid.
                found = yield from self._gets(server, raw)
                now_state, cas, entry = yield from self._from_gets(key, raw, encoded, server, found)
                if cas is None or now_state[2] is not signed_for:
                    continue
                if entry is not None and entry[1] > time.time():
                    if type(entry[0]) is not PageManifest:
                        return False
                    pages = yield from self._read_pages(key, encoded, entry[0], now_state[2])
                    if pages is not NONE:
                        return False
                args = (raw, flags, exptime, (state[1], item))
                if (yield from self._store(server, b"cas", *args, cas=cas)):
                    if not (yield from self._still(server, state)):
                        continue
                    self._sets += 1
                    if entry is not None and type(entry[0]) is PageManifest:
                        old = old_pages(self._internal_prefix, raw, entry[0].flags, flags)
                        yield from self._drop_pages(old)
                    return True
        except Exception as exc:
            self._fault(server, exc, "an add", (raw,))
        return False

    def add(self, key: Key, value: Any, ttl: float) -> bool:
        """Store only if ``key`` has no live entry; atomic across clients (memcached add/cas)."""
        return _run(self._add(key, value, ttl))

    async def aadd(self, key: Key, value: Any, ttl: float) -> bool:
        """Awaitable :meth:`add` (native asyncio)."""
        return await _arun(self._add(key, value, ttl))

    def _delete_raw(self, server: Server, raw: bytes) -> Op[None]:
        """Delete the item ``raw`` of ``server`` (and the pages of a paged value)."""
        if server.down and server.missed((raw,)):
            self._errors += 1
            return
        try:
            probed, reply = yield (IO, server, probe(raw) + protocol.delete(raw), lines(2))
            check(reply)
        except Exception as exc:
            self._fault(server, exc, "a delete", (raw,))
            return
        old_flags = probed_flags(probed)
        if old_flags:
            yield from self._drop_pages(old_pages(self._internal_prefix, raw, old_flags, 0))

    def _delete_many(self, server: Server, raws: list[bytes]) -> Op[None]:
        """Delete the items ``raws`` of ``server`` (pages too), whether or not it is down; a
        failure is raised."""
        for start in range(0, len(raws), _DELETE_BATCH):
            chunk = raws[start : start + _DELETE_BATCH]
            request = protocol.probe_delete_many(chunk)
            answers = yield (IO, server, request, lines(2 * len(chunk)))
            pages: list[bytes] = []
            for i, raw in enumerate(chunk):
                check(answers[2 * i + 1])
                old_flags = probed_flags(answers[2 * i])
                if old_flags:
                    pages += old_pages(self._internal_prefix, raw, old_flags, 0)
            if pages:
                yield from self._drop_pages(pages)

    def _delete(self, key: Key) -> Op[None]:
        raw, _, server = self._locate(key)
        yield from self._delete_raw(server, raw)

    def delete(self, key: Key) -> None:
        """Remove ``key`` (and the pages of a paged value, best effort)."""
        _run(self._delete(key))

    async def adelete(self, key: Key) -> None:
        """Awaitable :meth:`delete` (native asyncio)."""
        await _arun(self._delete(key))

    def _update_expiry(self, key: Key, new_ttl: Callable[[float], float], what: str) -> Op[bool]:
        """gets/cas loop re-signing the entry of ``key`` with a new logical ttl."""
        raw, encoded, server = self._locate(key)
        if server.down and server.missed((raw,)):
            self._errors += 1
            return False
        try:
            for _ in range(_CAS_ATTEMPTS):
                found = yield from self._gets(server, raw)
                state, cas, entry = yield from self._from_gets(key, raw, encoded, server, found)
                if entry is None:
                    return False
                value, expires = entry
                ttl = new_ttl(expires - time.time())
                flags = value.flags if type(value) is PageManifest else 0
                exptime = self._exptime(ttl)
                if flags and not (yield from self._touch_pages(value, exptime and exptime + 1)):
                    return False
                item = self._encode(key, encoded, value, ttl, state[2])
                args = (raw, flags, exptime, (state[1], item))
                stored = yield from self._store(server, b"cas", *args, cas=cas)
                if stored:
                    return True
                if stored is None:  # deleted meanwhile
                    return False
        except Exception as exc:
            self._fault(server, exc, what, (raw,))
        return False

    def renew(self, key: Key, ttl: float) -> bool:
        """Make an existing entry (stale or not) live at least ``ttl`` more seconds (one
        that has longer left keeps it); False if absent."""
        ttl = check_ttl(ttl)
        return _run(self._update_expiry(key, lambda left: max(left, ttl), "a renew"))

    async def arenew(self, key: Key, ttl: float) -> bool:
        """Awaitable :meth:`renew` (native asyncio)."""
        ttl = check_ttl(ttl)
        return await _arun(self._update_expiry(key, lambda left: max(left, ttl), "a renew"))

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
        if server.down:
            self._errors += 1
            raise CacheMissError(key)
        for attempt in range(_UPDATE_ATTEMPTS):
            try:
                found = yield from self._gets(server, raw)
                state, cas, entry = yield from self._from_gets(key, raw, encoded, server, found)
            except Exception as exc:
                self._fault(server, exc, "an update")
                raise CacheMissError(key) from exc
            now = time.time()
            if entry is None or entry[1] <= now:
                raise CacheMissError(key)
            value, expires = entry
            old_flags = 0
            if type(value) is PageManifest:
                old_flags = value.flags
                value = yield from self._read_pages(key, encoded, value, state[2])
                if value is NONE:
                    raise CacheMissError(key)
            new = yield (CALL, fn, value)  # (its time is not counted against the timeout)
            new_ttl = expires - now if ttl is None else ttl
            payload = self._encode(key, encoded, new, new_ttl, state[2])
            written = yield from self._item(payload, key, encoded, new_ttl, raw, state[2])
            if written is None:  # a page could not be written (counted)
                raise CacheMissError(key)
            item, flags = written
            args = (raw, flags, self._exptime(new_ttl), (state[1], item))
            try:
                stored = yield from self._store(server, b"cas", *args, cas=cas)
            except Exception as exc:
                self._fault(server, exc, "an update", (raw,))
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
        yield from _one_or_all([self._renew_generation(s) for s in self._servers.ring.nodes])

    def _renew_generation(self, server: Server) -> Op[None]:
        """A new generation on ``server``: every entry of the namespace there is dropped."""
        if server.down and server.missed(clear=True):
            self._errors += 1
            return
        record = self._new_record(server)
        try:
            yield from self._store(server, b"set", self._gen_key, 0, 0, (record,))
        except Exception as exc:
            self._fault(server, exc, "a clear", clear=True)
            return
        self._note_record(server, record)

    def clear(self) -> None:
        """Invalidate every entry of this namespace on every server (a new generation)."""
        _run(self._clear())

    async def aclear(self) -> None:
        """Awaitable :meth:`clear` (native asyncio)."""
        await _arun(self._clear())

    def _purge(self, timeout: float) -> Op[None]:
        horizon = time.time() - check_ttl(timeout, "timeout")
        yield from _one_or_all([self._purge_one(s, horizon) for s in self._servers.ring.nodes])

    def _purge_one(self, server: Server, horizon: float) -> Op[None]:
        if server.down and server.missed(horizon=horizon):
            self._errors += 1
            return
        try:
            yield from self._raise_horizon(server, horizon)
        except Exception as exc:
            self._fault(server, exc, "a purge", horizon=horizon)

    def _raise_horizon(self, server: Server, horizon: float) -> Op[None]:
        gen_key = self._gen_key
        for _ in range(_CAS_ATTEMPTS):
            found = yield (IO, server, protocol.gets([gen_key]), CasValues())
            item = found.get(gen_key)
            if item is None or not self._note_record(server, item[0]):
                # No record we trust: the one settled now drops every older entry anyway.
                yield from self._establish(server)
                return
            _, gen, _, old_horizon, _ = server.state
            if old_horizon >= horizon:
                return
            record = self._new_record(server, gen, horizon)
            if (yield from self._store(server, b"cas", gen_key, 0, 0, (record,), cas=item[1])):
                self._note_record(server, record)
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

    # ---- leases (see chorde.leases) ---------------------------------------------------------
    #
    # With meta commands (memcached 1.6+) a lease is the server's win token on the entry's own
    # item: ``mg ... N<lease>`` makes a missing entry an empty placeholder living ``lease``
    # seconds and gives its first reader the token (``W``), later readers seeing ``Z``; an
    # entry held but not acceptable is marked stale (``md I C<cas> T<lease>``: if it did not
    # change since it was read, and for ``lease`` more seconds at most), after which the first
    # reader wins. A value stored replaces the item and so ends the lease; a lease whose winner
    # died ends with the item (the placeholder, or the marked entry), so the next reader wins.
    # Plain reads stay on text ``get``, which neither takes nor shows tokens.
    #
    # Without meta commands the lease is a key of its own beside the entry (on its server):
    # ``add``-ed for ``lease`` seconds, deleted in the round trip that stores the value.

    def _speaks_meta(self, server: Server) -> Op[bool]:
        """Whether to use meta commands with ``server`` (asked once: ``mn``)."""
        if self._meta is not None:
            return self._meta
        meta = server.meta
        if meta is None:
            answer = yield (IO, server, protocol.META_NOOP, Version())  # (writes nothing)
            meta = server.meta = answer == b"MN"
            if not meta:
                self._log.warning(
                    "chorde: memcached %s has no meta commands (%r to mn): its leases are "
                    "lease keys (text protocol)",
                    server.name,
                    answer[:40],
                    kind=f"no meta {server.name}",
                )
        return meta

    def _lease_key(self, raw: bytes) -> bytes:
        """The key of ``raw``'s lease on a server without meta commands (on ``raw``'s server)."""
        lease = self._internal_prefix + b"lease." + raw
        if len(lease) > 250:
            lease = self._internal_prefix + b"lease#" + hashlib.sha256(raw).hexdigest().encode()
        return lease

    def _lease_read(self, key: Key, accept: Callable[[Any, float], bool]) -> Op[LeaseRead]:
        raw, encoded, server = self._locate(key)
        if server.down:
            self._errors += 1
            return LeaseRead(UNAVAILABLE)
        try:
            if (yield from self._speaks_meta(server)):
                try:
                    return (yield from self._meta_lease(key, raw, encoded, server, accept))
                except protocol.UnknownCommand:  # no longer a server with meta commands
                    if self._meta is not None:
                        raise
                    server.meta = False
            return (yield from self._text_lease(key, raw, encoded, server, accept))
        except Exception as exc:
            self._fault(server, exc, "a lease read", (raw,))
            return LeaseRead(UNAVAILABLE)

    def _held(
        self, key: Key, encoded: bytes, data: bytes | None, state: State
    ) -> Op[tuple[Any, float]]:
        """``(value, ttl_left)`` of an item's data (``NONE``, -1.0 when it holds none)."""
        entry = self._decode(key, encoded, data, state) if data else None
        if entry is None:
            return NONE, -1.0
        value, expires = entry
        if type(value) is PageManifest:
            value = yield from self._read_pages(key, encoded, value, state[2])
            if value is NONE:
                return NONE, -1.0
        return value, expires - time.time()

    def _generation_of(self, server: Server, record: bytes | None) -> Op[State]:
        """The generation view after a read that brought ``record``."""
        state = server.state
        if record != state[0] and not self._note_record(server, record):
            yield from self._establish(server)  # (nothing read before it is of it)
            return UNKNOWN_STATE
        return server.state

    def _meta_lease(
        self,
        key: Key,
        raw: bytes,
        encoded: bytes,
        server: Server,
        accept: Callable[[Any, float], bool],
    ) -> Op[LeaseRead]:
        """A lease read with meta commands (see above): one round trip, and one more when the
        entry held is to be marked stale first."""
        seconds = self._lease_seconds
        vivifying = protocol.meta_get(raw, b"v c t f N%d" % seconds)
        gen_read = protocol.meta_get(self._gen_key, b"v")
        request, reply = vivifying + gen_read, Replies(META, META)
        before: tuple[int, bytes] | None = None  # (ttl, flags) of the entry we mark
        for _ in range(_CAS_ATTEMPTS):
            answers = yield (IO, server, request, reply)
            if len(answers) == 3:  # a mark, then a read
                mark, got, record = answers
                marked = before if mark[0] == b"HD" else None
            else:
                got, record = answers
                marked = None
            state = yield from self._generation_of(server, record[1])
            code, data, flags = got
            if code != b"VA":
                if code != b"EN":
                    raise protocol.BadReply(f"unexpected reply {code!r} to a lease read")
                request, reply = vivifying + gen_read, Replies(META, META)  # gone meanwhile
                continue
            found = protocol.meta_flags(flags)
            cas = int(found.get(b"c") or 0)
            value, ttl_left = yield from self._held(key, encoded, data, state)
            # What the entry is restored with if its token goes back: as it was before a mark.
            kept = marked or (int(found.get(b"t") or 0), found.get(b"f") or b"0")
            if value is not NONE and accept(value, ttl_left):
                if b"W" in found:  # won on an entry we keep after all: the token goes back
                    yield from self._restore(server, raw, cas, data or b"", kept)
                return LeaseRead(HIT, value, ttl_left)
            if b"W" in found:
                return LeaseRead(WON, value, ttl_left, (raw, cas, data or b"", kept))
            if b"Z" in found:
                return LeaseRead(BUSY, value, ttl_left)
            # Held, not acceptable, no token out: mark it stale if it is what we read, for
            # ``seconds`` at most, and read it again (the first reader after the mark wins).
            before = kept
            mark_request = protocol.meta_delete(raw, b"I C%d T%d" % (cas, seconds))
            request = mark_request + protocol.meta_get(raw, b"v c t f") + gen_read
            reply = Replies(META, META, META)
        return LeaseRead(UNAVAILABLE)

    def _restore(
        self, server: Server, raw: bytes, cas: int, data: bytes, kept: tuple[int, bytes]
    ) -> Op[None]:
        """Give a token back by rewriting the item as it was (if its cas is still ``cas``):
        the token and a stale mark go with the rewrite, the next reader may win."""
        if not data:  # a placeholder: gone, the next reader vivifies another
            yield (IO, server, protocol.meta_delete(raw, b"C%d" % cas), Meta())
            return
        ttl, flags = kept
        seconds = 0 if ttl < 0 else max(ttl, 1)  # (-1: no expiry)
        request = protocol.meta_set(raw, (data,), b"C%d T%d F%s" % (cas, seconds, flags))
        yield (IO, server, request, Meta())

    def _text_lease(
        self,
        key: Key,
        raw: bytes,
        encoded: bytes,
        server: Server,
        accept: Callable[[Any, float], bool],
    ) -> Op[LeaseRead]:
        """A lease read without meta commands: the entry and its lease key in one ``get``;
        when the entry is not acceptable and nobody holds the lease, an ``add`` of it with
        the entry read again."""
        gen_key = self._gen_key
        lease = self._lease_key(raw)
        found = yield (IO, server, protocol.get([raw, gen_key, lease]), Values())
        state = yield from self._generation_of(server, found.get(gen_key))
        value, ttl_left = yield from self._held(key, encoded, found.get(raw), state)
        if value is not NONE and accept(value, ttl_left):
            return LeaseRead(HIT, value, ttl_left)
        if lease in found:
            return LeaseRead(BUSY, value, ttl_left)
        take = store(b"add", lease, 0, self._lease_seconds, (os.urandom(8).hex().encode(),))
        stored, found = yield (
            IO,
            server,
            take + protocol.get([raw, gen_key]),
            Replies(LINE, VALUES),
        )
        state = yield from self._generation_of(server, found.get(gen_key))
        value, ttl_left = yield from self._held(key, encoded, found.get(raw), state)
        won = store_result(stored)
        if value is not NONE and accept(value, ttl_left):
            if won:
                yield (IO, server, protocol.delete(lease), Line())
            return LeaseRead(HIT, value, ttl_left)
        return LeaseRead(WON if won else BUSY, value, ttl_left, lease if won else None)

    def lease_read(self, key: Key, accept: Callable[[Any, float], bool]) -> LeaseRead:
        """Read ``key``; unless ``accept(value, ttl_left)`` likes the value held, take its
        lease if nobody holds it (see :mod:`chorde.leases`)."""
        return _run(self._lease_read(key, accept))

    async def alease_read(self, key: Key, accept: Callable[[Any, float], bool]) -> LeaseRead:
        """Awaitable :meth:`lease_read` (native asyncio)."""
        return await _arun(self._lease_read(key, accept))

    def _lease_put(self, key: Key, value: Any, ttl: float, token: Any) -> Op[bool]:
        # A value replaces a meta lease's item (which ends it); a lease key goes with it.
        return (yield from self._put(key, value, ttl, token if type(token) is bytes else None))

    def lease_put(self, key: Key, value: Any, ttl: float, token: Any) -> None:
        """Store the value computed under the lease ``token`` (from :meth:`lease_read`),
        which ends the lease."""
        _run(self._lease_put(key, value, ttl, token))

    async def alease_put(self, key: Key, value: Any, ttl: float, token: Any) -> None:
        """Awaitable :meth:`lease_put` (native asyncio)."""
        await _arun(self._lease_put(key, value, ttl, token))

    def _lease_release(self, key: Key, token: Any) -> Op[None]:
        raw, _, server = self._locate(key)
        if server.down:
            return  # (the lease lapses by itself)
        try:
            if type(token) is bytes:
                yield (IO, server, protocol.delete(token), Line())
            else:
                yield from self._restore(server, *token)
        except Exception as exc:
            self._fault(server, exc, "a lease release", (raw,))

    def lease_release(self, key: Key, token: Any) -> None:
        """Give the lease ``token`` back, storing nothing: the entry stays as it was and the
        next reader may take the lease at once."""
        _run(self._lease_release(key, token))

    async def alease_release(self, key: Key, token: Any) -> None:
        """Awaitable :meth:`lease_release` (native asyncio)."""
        await _arun(self._lease_release(key, token))

    # ---- recovery -----------------------------------------------------------------------

    def _replay(self, server: Server, log: WriteLog) -> Op[None]:
        """Undo on ``server``, back after an outage, what could not be written there meanwhile
        (run by its prober thread before it is used again; see :class:`Server`): the keys
        are deleted (deletes only: a value written meanwhile by another client stays, and no
        value older than a lost write can come back), or, when there were too many, the
        generation is renewed; a lost purge is made. Then its generation record is read
        again (a restarted server has none)."""
        if log.clear:
            record = self._new_record(server)
            yield from self._store(server, b"set", self._gen_key, 0, 0, (record,))
            self._note_record(server, record)
        else:
            yield from self._delete_many(server, list(log.keys))
        if log.horizon:
            yield from self._raise_horizon(server, log.horizon)
        yield from self._establish(server)

    # ---- introspection ------------------------------------------------------------------

    def _server_stats(self) -> Op[list[dict[bytes, bytes]]]:
        up = [s for s in self._servers.ring.nodes if not s.down]
        if not up:
            return []
        answers = yield (BATCH, [(s, STATS_REQUEST, Stats()) for s in up])
        result = []
        for server, answer in zip(up, answers, strict=True):
            if isinstance(answer, BaseException):
                self._fault(server, answer, "stats")
            else:
                result.append(answer)
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
        """Stop the refresher and prober threads and close every connection."""
        self._servers.close()

    def __repr__(self) -> str:
        return f"<MemcachedClient servers={self.servers!r} namespace={self.namespace!r}>"


def _stale(left: float) -> float:
    """The ttl :meth:`MemcachedClient.expire` gives an entry: none left."""
    return min(left, 0.0)
