"""RedisClient: each operation written once, as a generator of calls, run by either driver.

An operation (``_lookup``, ``_put``, ``_update`` ...) maps keys, encodes and decodes payloads,
follows generations and handles faults; for I/O it yields a call (:mod:`.calls`), which
:func:`.drivers.run` performs with redis-py's blocking client and :func:`.drivers.arun` with
its asyncio one. See the package docstring for what is stored and how.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import random
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from chorde.clients.base import BaseCacheClient, CacheStats, Key, check_ttl
from chorde.clients.redis import scripts, topology
from chorde.clients.redis.calls import AWAIT, CMD, INFO, NODE, PIPE, REFRESH, SLEEP, Op
from chorde.clients.redis.drivers import arun as _arun
from chorde.clients.redis.drivers import run as _run
from chorde.clients.redis.health import Node, WriteLog, answered, logger
from chorde.clients.redis.topology import Topology
from chorde.errors import CacheMissError, ConfigurationError
from chorde.keys import encode_key, key_digest, memoizable
from chorde.leases import BUSY, HIT, UNAVAILABLE, WON, LeaseRead
from chorde.sentinel import NONE
from chorde.serialization import InvalidPayload, RateLimitedLog, Serializer

__all__ = ["RedisClient"]

_GEN_SIZE = 8
_ZERO_GEN = bytes(_GEN_SIZE)
_RECORD = struct.Struct(">8sd")
_HORIZON = struct.Struct(">d")
_TAG_SIZE = 32  # the payload's signature, last: what compare-and-set compares
# Encoded keys up to this size are the Redis key as they are (after the prefix).
_KEY_MAX = 256
_KEY_MEMO_SIZE = 8192
# Redis takes expiries up to about 2**63 ms; beyond ~31,000 years an entry is kept forever.
_PX_MAX = 10**15
_CAS_ATTEMPTS = 4
_UPDATE_ATTEMPTS = 64
_LOG_INTERVAL = 60.0
_SLOTS = 16384
# A drain of the write log deletes this many keys per command.
_DRAIN_BATCH = 500

Entry = tuple[Any, float]
#: A namespace record as last read: ``[record, generation, horizon, trusted until]``.
Record = list[Any]
Items = Iterable[tuple[Key, Any]] | dict[Key, Any]
# Errors of a cluster whose slot map is out of date.
_REDIRECTS = frozenset({"MovedError", "AskError", "SlotNotCoveredError"})

_slot_tags: list[bytes] | None = None
_slot_tags_lock = threading.Lock()


def _tags() -> list[bytes]:
    """For each cluster slot, a short string that hashes to it (a hash tag naming the slot)."""
    global _slot_tags
    if _slot_tags is None:
        from redis.crc import key_slot

        with _slot_tags_lock:
            if _slot_tags is None:
                found: list[bytes | None] = [None] * _SLOTS
                missing, i = _SLOTS, 0
                while missing:
                    tag = b"%d" % i
                    slot = key_slot(tag)
                    if found[slot] is None:
                        found[slot] = tag
                        missing -= 1
                    i += 1
                _slot_tags = found  # type: ignore[assignment]
    assert _slot_tags is not None
    return _slot_tags


def _ttl(ttl: Any) -> float:
    """:func:`~chorde.clients.base.check_ttl`, with the common cases first."""
    kind = type(ttl)
    if (kind is int or kind is float) and ttl >= 0:
        return float(ttl)
    return check_ttl(ttl)


def _stale(left: float) -> float:
    return min(left, 0.0)


def _update_backoff(attempt: int) -> float:
    return random.random() * min(0.0005 * (attempt + 1), 0.01)


class RedisClient(BaseCacheClient):
    """A shared cache on Redis or Valkey: one server, a Sentinel-watched master, or a Cluster.

    Where the data lives (one of):

    * ``server``: ``"host:port"`` (default ``"localhost:6379"``) with ``db``, ``username`` /
      ``password`` (ACL), ``ssl`` and the ``ssl_*`` options for TLS; or ``unix_socket_path``;
    * ``sentinels`` (``["host:26379", ...]``) and ``service_name``: the master the sentinels
      name, followed through failovers (``sentinel_username``/``sentinel_password`` when the
      sentinels want them);
    * ``cluster`` (``["host:port", ...]``, some nodes of a Redis Cluster);
    * ``server`` may instead be a client object of your own: a ``redis.Redis``,
      ``redis.cluster.RedisCluster`` or ``valkey.Valkey``; ``async_client`` its asyncio twin
      (without one, the awaitable methods use an executor). You keep them open, and close them.

    ``checksum_key`` (a secret, or a list of them: sign with the first, accept any) signs
    every value and is required. Other options:

    * ``namespace``: prefix of every key; ``clear()`` clears only its namespace;
    * ``compress`` / ``compress_threshold``: zlib above that many bytes;
    * ``connect_timeout`` / ``timeout`` (0.5 s / 1 s) bound each call; ``retry_interval``
      (1 s): how long a failed server is left alone before one caller probes it;
    * ``stale_grace`` (60 s): how long Redis keeps an entry past its logical expiry, for
      ``getTtl`` to return it stale;
    * ``max_value_size`` (64 MiB): the largest pickle written or read;
    * ``write_log_size`` (10,000): keys whose writes failed that are remembered (and deleted
      before their next use); past it, a new generation clears the namespace instead;
    * ``generation_check`` (1 s): how long a put trusts the namespace generation it last
      read (a plain ``SET``); past it, a put is a script that reads it again. A clear by
      another client within that time may lose this client's writes (misses, never older
      values); 0 makes every put a script;
    * ``max_connections``: bound of each connection pool (unbounded by default: on one
      server, connections are then kept between calls, see the package docstring);
    * ``lease_ttl`` (10 s): leases (:mod:`chorde.leases`): ``@cached`` computes a missing or
      stale entry once across every client, the others waiting for its value; a winner
      that dies or hangs delays them by at most this. 0 turns leases off.
    """

    blocking = True

    def __init__(
        self,
        server: Any = "localhost:6379",
        checksum_key: str | bytes | Sequence[str | bytes] | None = None,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        unix_socket_path: str | None = None,
        ssl: bool = False,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_cert_reqs: str = "required",
        ssl_check_hostname: bool = False,
        sentinels: Sequence[str] | None = None,
        service_name: str = "mymaster",
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        cluster: Sequence[str] | None = None,
        async_client: Any = None,
        namespace: str = "",
        compress: bool = True,
        compress_threshold: int = 1024,
        connect_timeout: float = 0.5,
        timeout: float = 1.0,
        retry_interval: float = 1.0,
        stale_grace: float = 60.0,
        max_value_size: int = 64 * 1024 * 1024,
        write_log_size: int = 10_000,
        generation_check: float = 1.0,
        max_connections: int | None = None,
        lease_ttl: float = 10.0,
    ) -> None:
        if not checksum_key:
            raise ConfigurationError(
                "RedisClient needs a checksum_key: values are pickled, and unpickling is "
                "running code, so every value is HMAC-signed and verified before it is "
                "unpickled; without a secret key anyone who can write to the Redis could "
                "execute code in this process"
            )
        for name, val in (
            ("connect_timeout", connect_timeout),
            ("timeout", timeout),
            ("retry_interval", retry_interval),
            ("stale_grace", stale_grace),
            ("generation_check", generation_check),
            ("lease_ttl", lease_ttl),
        ):
            check_ttl(val, name)
        if not lease_ttl < math.inf:
            raise ConfigurationError(f"lease_ttl must be finite (0: no leases), got {lease_ttl!r}")
        if not isinstance(namespace, str) or "{" in namespace or "}" in namespace:
            raise ConfigurationError(
                f"namespace must be a str without braces (a cluster hash tag), got {namespace!r}"
            )
        if isinstance(db, bool) or not isinstance(db, int) or db < 0:
            raise ConfigurationError(f"db must be a database number >= 0, got {db!r}")
        if isinstance(write_log_size, bool) or not isinstance(write_log_size, int):
            raise ConfigurationError(f"write_log_size must be an int, got {write_log_size!r}")
        if sum(x is not None for x in (sentinels, cluster, unix_socket_path)) > 1:
            raise ConfigurationError("give at most one of sentinels, cluster and unix_socket_path")
        self._serializer = Serializer(
            checksum_key,
            compress=compress,
            compress_threshold=compress_threshold,
            max_size=max_value_size,
        )
        self.namespace = namespace
        self.timeout = float(timeout)
        self.retry_interval = float(retry_interval)
        self.stale_grace = float(stale_grace)
        self.generation_check = float(generation_check)
        #: Seconds a lease lasts (0: no leases).
        self.lease_ttl = float(lease_ttl)
        self._log = RateLimitedLog(logger, interval=_LOG_INTERVAL)
        self._hits = self._misses = self._sets = self._errors = 0
        self._key_memo: dict[Key, tuple[bytes, bytes]] = {}

        options: dict[str, Any] = {
            "socket_connect_timeout": float(connect_timeout),
            "socket_timeout": float(timeout),
            "username": username,
            "password": password,
            "max_connections": max_connections,
        }
        tls = {
            "ssl_ca_certs": ssl_ca_certs,
            "ssl_certfile": ssl_certfile,
            "ssl_keyfile": ssl_keyfile,
            "ssl_cert_reqs": ssl_cert_reqs,
            "ssl_check_hostname": ssl_check_hostname,
        }
        if ssl:
            options.update(ssl=True, **tls)
        self._topology = self._connect(
            server,
            async_client,
            options,
            db=db,
            unix_socket_path=unix_socket_path,
            sentinels=sentinels,
            service_name=service_name,
            sentinel_auth={"username": sentinel_username, "password": sentinel_password},
            cluster=cluster,
        )
        self._is_cluster = self._topology.is_cluster

        prefix = namespace.encode() + b":" if namespace else b""
        self._prefix = prefix
        internal = namespace.encode() + b"~"
        self._record_key = internal + b"gen"
        self._lease_prefix = internal + b"lease"
        self._record_keys: list[bytes] | None = None
        if self._is_cluster:
            self._record_keys = [internal + b"gen{" + tag + b"}" for tag in _tags()]
        # Slot (0 outside a cluster) -> (record as last read, its generation, its horizon).
        self._records: dict[int, Record] = {}
        self._main = Node(self._topology.name, self.retry_interval, self._log)
        self._nodes: dict[str, Node] = {}
        self._writes = WriteLog(write_log_size)
        # A cluster's slot map is read again (REFRESH) after a fault, at most this often.
        self._map_stale = False
        self._refresh_after = 0.0

    @staticmethod
    def _connect(
        server: Any,
        async_client: Any,
        options: dict[str, Any],
        *,
        db: int,
        unix_socket_path: str | None,
        sentinels: Sequence[str] | None,
        service_name: str,
        sentinel_auth: dict[str, Any],
        cluster: Sequence[str] | None,
    ) -> Topology:
        if server is not None and not isinstance(server, str | tuple):
            return topology.given(server, async_client)
        if async_client is not None:
            raise ConfigurationError("async_client goes with a client object given as server")
        if sentinels is not None:
            addresses = [topology.parse_address(s, topology.SENTINEL_PORT) for s in sentinels]
            if not addresses:
                raise ConfigurationError("sentinels must name at least one sentinel")
            if not isinstance(service_name, str) or not service_name:
                raise ConfigurationError(f"service_name must be a name, got {service_name!r}")
            return topology.sentinel(
                addresses, service_name, sentinel_kwargs=sentinel_auth, db=db, **options
            )
        if cluster is not None:
            nodes = [topology.parse_address(n) for n in cluster]
            if not nodes:
                raise ConfigurationError("cluster must name at least one node")
            if db:
                raise ConfigurationError("a Redis Cluster has only db 0")
            return topology.cluster(nodes, **options)
        if unix_socket_path is not None:
            for tcp_only in ("socket_connect_timeout", "ssl"):
                options.pop(tcp_only, None)
            return topology.standalone(
                f"unix:{unix_socket_path}", unix_socket_path=unix_socket_path, db=db, **options
            )
        host, port = topology.parse_address(server or "localhost")
        return topology.standalone(f"{host}:{port}", host=host, port=port, db=db, **options)

    # ---- keys, records, payloads --------------------------------------------------------------

    def _map_key(self, key: Key) -> tuple[bytes, bytes]:
        """``(Redis key, encoded key)``; str keys and tuples of str (the HTTP cache's) are
        memoized."""
        kind = type(key)
        memoized = kind is str or (kind is tuple and memoizable(key))
        if memoized:
            mapped = self._key_memo.get(key)
            if mapped is not None:
                return mapped
        encoded = encode_key(key)
        if len(encoded) <= _KEY_MAX:
            raw = self._prefix + encoded
        else:  # (encoded keys never start with "#")
            raw = self._prefix + b"#" + key_digest(encoded).encode("ascii")
        if memoized:
            memo = self._key_memo
            if len(memo) >= _KEY_MEMO_SIZE:
                memo.clear()
            memo[key] = (raw, encoded)
        return raw, encoded

    def _slot(self, raw: bytes) -> int:
        if self._record_keys is None:
            return 0
        from redis.crc import key_slot

        return key_slot(raw)

    def _record_key_of(self, slot: int) -> bytes:
        keys = self._record_keys
        return self._record_key if keys is None else keys[slot]

    def _note(self, slot: int, record: bytes | None) -> Record:
        """The state of a record just read for ``slot``: ``[record, generation, horizon,
        trusted until]``, parsed once; writes may use the generation until the last."""
        trust = time.monotonic() + self.generation_check
        known = self._records.get(slot)
        if known is not None and known[0] == record:
            known[3] = trust
            return known
        if record is not None and len(record) >= _RECORD.size:
            gen, horizon = _RECORD.unpack_from(record)
        else:
            gen = record[:_GEN_SIZE] if record and len(record) >= _GEN_SIZE else _ZERO_GEN
            horizon = 0.0
        state = self._records[slot] = [record, gen, horizon, trust]
        return state

    def _px(self, ttl: float) -> int:
        """Redis's expiry (ms) for an entry alive ``ttl`` more seconds; 0 is none."""
        if ttl == math.inf:
            return 0
        ms = int((ttl + self.stale_grace) * 1000) + 1  # (rounded up)
        return ms if 0 < ms < _PX_MAX else (1 if ms <= 0 else _PX_MAX)

    def _encode(self, key: Key, encoded: bytes, value: Any, ttl: float) -> bytes:
        try:
            return self._serializer.dumps(value, key=encoded, expires=time.time() + ttl)
        except Exception as exc:
            exc.add_note(f"while serializing the value for cache key {key!r}")
            raise

    def _invalid(self, key: Key, exc: InvalidPayload) -> None:
        self._errors += 1
        self._log.warning("chorde: dropping an invalid Redis payload for %r: %s", key, exc)

    def _decode(self, key: Key, encoded: bytes, data: bytes | None, state: Record) -> Entry | None:
        """``(value, expires)`` of a stored item, or None (absent, older generation, purged
        or invalid: the last counted as an error)."""
        if data is None or not data.startswith(state[1]):
            return None
        try:
            entry = self._serializer.loads(data, key=encoded, offset=_GEN_SIZE)
        except InvalidPayload as exc:
            self._invalid(key, exc)
            return None
        if state[2] and entry[1] <= state[2]:
            return None
        return entry

    # ---- shared steps -------------------------------------------------------------------------

    def _fault(self, node: Node | None, exc: BaseException, what: str) -> None:
        """Count and log a failure; the node (when known) is down for a while unless it
        answered. In a cluster, the slot map is refreshed before the next call."""
        self._errors += 1
        if self._is_cluster and (not answered(exc) or type(exc).__name__ in _REDIRECTS):
            self._map_stale = True
        if node is None:
            self._log.warning(
                "chorde: Redis %s failed during %s (%s: %s)",
                self._main.name,
                what,
                type(exc).__name__,
                exc,
                kind=f"failed {what}",
            )
        else:
            node.failed(exc, what)

    def _refresh(self, what: str) -> Op[bool]:
        """Read the cluster's slot map again (at most once per ``retry_interval``, so a
        failover is followed within it); False when no node answered."""
        now = time.monotonic()
        if now < self._refresh_after:
            return True
        self._refresh_after = now + self.retry_interval
        self._map_stale = False
        try:
            yield (REFRESH, None)
        except Exception as exc:
            self._fault(self._main, exc, what)
            self._map_stale = True
            return False
        return True

    def _reach(self, raw: bytes, what: str) -> Op[Node | None]:
        """The node serving ``raw``, if usable now (None: treat it as down; counted). A node
        probed after being down first settles what failed meanwhile."""
        main = self._main
        if main.dead_until and not main.usable():
            self._errors += 1
            return None
        node = main
        if self._is_cluster:
            if self._map_stale and not (yield from self._refresh(what)):
                return None
            try:
                name = yield (NODE, raw)
            except Exception as exc:
                self._fault(main, exc, what)
                return None
            node = self._nodes.get(name) or self._nodes.setdefault(
                name, Node(name, self.retry_interval, self._log)
            )
            if node.dead_until and not node.usable():
                self._errors += 1
                return None
        # Probing a node that was down: what failed meanwhile is settled first (the node is
        # back once a call to it succeeds: see _up).
        probing = (node.dead_until or main.dead_until) and self._writes
        if probing and not (yield from self._settle(list(self._writes.keys), node, what)):
            return None
        return node

    def _up(self, node: Node) -> None:
        """A call to ``node`` succeeded: it is no longer down (nor the cluster, if it was)."""
        if node.dead_until:
            node.back()
        if self._main.dead_until:
            self._main.back()

    def _calm(self) -> bool:
        """Nothing to check before a call: one server, up, owing nothing (the common case,
        where the hot paths skip :meth:`_node_for`)."""
        return not (self._is_cluster or self._main.dead_until or self._writes.pending)

    def _node_for(self, raw: bytes, what: str) -> Op[Node | None]:
        """:meth:`_reach`, then the key's own debt settled (its last write failed)."""
        if self._calm():
            return self._main
        node = yield from self._reach(raw, what)
        writes = self._writes
        if node is None:
            return None
        owed = writes.clear_owed or (writes.keys and raw in writes.keys)
        if owed and not (yield from self._settle([raw], node, what)):
            return None
        return node

    def _settle(self, raws: list[bytes], node: Node, what: str) -> Op[bool]:
        """Redo an owed clear, else delete ``raws`` (keys whose last write failed); False
        when that failed (the node is then down)."""
        writes = self._writes
        if writes.clear_owed:
            return (yield from self._clear())
        for start in range(0, len(raws), _DRAIN_BATCH):
            batch = raws[start : start + _DRAIN_BATCH]
            try:
                if self._is_cluster:
                    replies = yield (PIPE, [("DEL", raw) for raw in batch])
                    done = [k for k, r in zip(batch, replies, strict=True) if not _failed(r)]
                    if len(done) < len(batch):
                        self._fault(None, next(r for r in replies if _failed(r)), what)
                else:
                    yield (CMD, ("DEL", *batch))
                    done = batch
            except Exception as exc:
                self._fault(node, exc, what)
                return False
            writes.settled(done)
            if len(done) < len(batch):
                return False
            self._up(node)
        return True

    def _dropped(self, raws: list[bytes]) -> None:
        """Writes of ``raws`` did not happen (or may not have): counted and logged."""
        self._errors += len(raws)
        self._writes.failed(raws)

    def _script(self, script: scripts.Script, keys: tuple[bytes, ...], *args: Any) -> Op[Any]:
        """Run a script by SHA1, sending it whole when the server does not know it yet."""
        try:
            return (yield (CMD, ("EVALSHA", script.sha, len(keys), *keys, *args)))
        except Exception as exc:
            if type(exc).__name__ != "NoScriptError":
                raise
        return (yield (CMD, ("EVAL", script.source, len(keys), *keys, *args)))

    # ---- reads --------------------------------------------------------------------------------

    def _lookup(self, key: Key) -> Op[Entry | None]:
        """``(value, expires)`` for ``key``, stale included, or None on a miss."""
        raw, encoded = self._map_key(key)
        node = self._main if self._calm() else (yield from self._node_for(raw, "a get"))
        if node is None:
            return None
        if self._record_keys is None:  # (one record: the hot path, inlined)
            slot, record_key = 0, self._record_key
        else:
            slot = self._slot(raw)
            record_key = self._record_keys[slot]
        try:
            data, record = yield (CMD, ("MGET", raw, record_key))
        except Exception as exc:
            self._fault(node, exc, "a get")
            return None
        return self._answered(node, key, encoded, data, slot, record)

    def _answered(
        self, node: Node, key: Key, encoded: bytes, data: bytes | None, slot: int, record: Any
    ) -> Entry | None:
        """What :meth:`_lookup` makes of the server's answer."""
        if node.dead_until or self._main.dead_until:
            self._up(node)
        return self._decode(key, encoded, data, self._note(slot, record))

    def _read(self, key: Key) -> Entry | None:
        """:meth:`_lookup` on the calling thread. With one server, up and owing nothing (the
        common case), its one command is sent here rather than by the driver: starting and
        ending the generator cost about as much as the rest of this client's share of a get.
        """
        if not self._calm():
            return _run(self._lookup(key), self._topology)
        raw, encoded = self._map_key(key)
        main = self._main
        try:
            data, record = self._topology.execute("MGET", raw, self._record_key)
        except Exception as exc:
            self._fault(main, exc, "a get")
            return None
        return self._answered(main, key, encoded, data, 0, record)

    def _live(self, key: Key, entry: Entry | None, default: Any) -> Any:
        if entry is not None and entry[1] > time.time():
            self._hits += 1
            return entry[0]
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default

    def _with_ttl(self, key: Key, entry: Entry | None, default: Any) -> tuple[Any, float]:
        if entry is not None:
            self._hits += 1
            return entry[0], entry[1] - time.time()
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default, -1.0

    def _contained(self, key: Key, entry: Entry | None, ttl: float | None) -> bool:
        if entry is None:
            self._misses += 1
            return False
        return self._with_ttl(key, entry, NONE)[1] > (ttl or 0)

    def get(self, key: Key, default: Any = NONE) -> Any:
        """Return the live value for ``key``, ``default`` if given, else raise a miss."""
        return self._live(key, self._read(key), default)

    async def aget(self, key: Key, default: Any = NONE) -> Any:
        """Awaitable :meth:`get` (native asyncio)."""
        return self._live(key, await _arun(self._lookup(key), self._topology), default)

    def getTtl(self, key: Key, default: Any = NONE) -> tuple[Any, float]:
        """Return ``(value, ttl_left)``; stale entries come back with ``ttl_left <= 0``."""
        return self._with_ttl(key, self._read(key), default)

    async def agetTtl(self, key: Key, default: Any = NONE) -> tuple[Any, float]:
        """Awaitable :meth:`getTtl` (native asyncio)."""
        return self._with_ttl(key, await _arun(self._lookup(key), self._topology), default)

    def contains(self, key: Key, ttl: float | None = None) -> bool:
        """True if ``key`` has a live entry (with more than ``ttl`` seconds left, if given)."""
        return self._contained(key, self._read(key), ttl)

    async def acontains(self, key: Key, ttl: float | None = None) -> bool:
        """Awaitable :meth:`contains` (native asyncio)."""
        return self._contained(key, await _arun(self._lookup(key), self._topology), ttl)

    def _fetch_many(self, raws: list[bytes]) -> Op[tuple[dict[bytes, bytes], dict[int, Any]]]:
        """What is stored under ``raws`` and the records of their slots: one round trip per
        node (one MGET outside a cluster, one per slot in it)."""
        found: dict[bytes, bytes] = {}
        states: dict[int, Any] = {}
        if not raws:
            return found, states
        if self._calm():  # (one server, up, owing nothing: every key asked as it is)
            nodes: dict[bytes, Node] = {}
            usable = raws
        else:
            nodes = yield from self._usable(raws, "a multi-get")
            if not nodes:
                return found, states
            usable = list(nodes)
        if not self._is_cluster:
            try:
                values = yield (CMD, ("MGET", *usable, self._record_key))
            except Exception as exc:
                self._fault(self._main, exc, "a multi-get")
                return found, states
            self._up(self._main)
            states[0] = self._note(0, values.pop())
            found = {raw: v for raw, v in zip(usable, values, strict=True) if v is not None}
            return found, states
        by_slot: dict[int, list[bytes]] = {}
        for raw in usable:
            by_slot.setdefault(self._slot(raw), []).append(raw)
        commands = [("MGET", *ks, self._record_key_of(s)) for s, ks in by_slot.items()]
        replies = yield (PIPE, commands)
        failed: set[Node] = set()
        for (slot, ks), reply in zip(by_slot.items(), replies, strict=True):
            if _failed(reply):
                node = nodes[ks[0]]
                if node not in failed:
                    failed.add(node)
                    self._fault(node, reply, "a multi-get")
                continue
            self._up(nodes[ks[0]])
            states[slot] = self._note(slot, reply.pop())
            found.update((raw, v) for raw, v in zip(ks, reply, strict=True) if v is not None)
        return found, states

    def _usable(self, raws: list[bytes], what: str) -> Op[dict[bytes, Node]]:
        """Those of ``raws`` on nodes usable now (their debts settled), with their node."""
        raws = list(dict.fromkeys(raws))
        if self._is_cluster:
            usable = {}
            for raw in raws:
                node = yield from self._node_for(raw, what)
                if node is not None:
                    usable[raw] = node
            return usable
        node = yield from self._reach(raws[0] if raws else b"", what)
        if node is None:
            return {}
        writes = self._writes
        owed = [raw for raw in raws if raw in writes.keys] if writes.keys else []
        if (writes.clear_owed or owed) and not (yield from self._settle(owed, node, what)):
            return {}
        return dict.fromkeys(raws, node)

    def _multi(
        self, keys: Iterable[Key], default: Any, with_ttl: bool
    ) -> Op[list[tuple[Key, Any]]]:
        keys = list(keys)
        memo, map_key = self._key_memo, self._map_key
        # (str keys seen lately straight from the memo: no call per key)
        mapped = [(memo.get(key) if type(key) is str else None) or map_key(key) for key in keys]
        found, states = yield from self._fetch_many([raw for raw, _ in mapped])
        now = time.time()
        miss = (default, -1.0) if with_ttl else default
        result: list[tuple[Key, Any]] = []
        append = result.append
        hits = 0
        loads = self._serializer.loads
        # Outside a cluster every key has the one record: its generation and horizon hoisted.
        single = states.get(0) if not self._is_cluster else None
        for key, (raw, encoded) in zip(keys, mapped, strict=True):
            data = found.get(raw)
            state = single or (states.get(self._slot(raw)) if data is not None else None)
            if data is None or state is None or not data.startswith(state[1]):
                append((key, miss))
                continue
            try:
                value, expires = loads(data, key=encoded, offset=_GEN_SIZE)
            except InvalidPayload as exc:
                self._invalid(key, exc)
                append((key, miss))
                continue
            if expires <= state[2] or (not with_ttl and expires <= now):
                append((key, miss))
                continue
            hits += 1
            append((key, (value, expires - now) if with_ttl else value))
        self._hits += hits
        self._misses += len(keys) - hits
        return result

    def getTtlMulti(self, keys: Iterable[Key], default: Any = NONE) -> Iterator[tuple[Key, Any]]:
        """Yield ``(key, (value, ttl_left))``; one round trip per node."""
        return iter(_run(self._multi(keys, default, True), self._topology))

    async def agetTtlMulti(
        self, keys: Iterable[Key], default: Any = NONE
    ) -> list[tuple[Key, tuple[Any, float]]]:
        """Awaitable :meth:`getTtlMulti`, returning a list of pairs (native asyncio)."""
        return await _arun(self._multi(keys, default, True), self._topology)

    def getMulti(self, keys: Iterable[Key], default: Any = NONE) -> Iterator[tuple[Key, Any]]:
        """Yield ``(key, value)``; misses and stale entries give ``default``."""
        return iter(_run(self._multi(keys, default, False), self._topology))

    async def agetMulti(self, keys: Iterable[Key], default: Any = NONE) -> list[tuple[Key, Any]]:
        """Awaitable :meth:`getMulti`, returning a list of pairs (native asyncio)."""
        return await _arun(self._multi(keys, default, False), self._topology)

    # ---- writes -------------------------------------------------------------------------------

    def _prepare(
        self, key: Key, value: Any, ttl: float, what: str
    ) -> Op[tuple[bytes, bytes, int, int, Node | None]]:
        """``(Redis key, payload, slot, px, node)`` of a write; node None when it cannot
        happen now (the key then goes to the write log)."""
        ttl = _ttl(ttl)
        raw, encoded = self._map_key(key)
        payload = self._encode(key, encoded, value, ttl)
        node = self._main if self._calm() else (yield from self._node_for(raw, what))
        if node is None:
            self._writes.failed([raw])
        return raw, payload, self._slot(raw), self._px(ttl), node

    def _put(self, key: Key, value: Any, ttl: float) -> Op[None]:
        raw, payload, slot, px, node = yield from self._prepare(key, value, ttl, "a set")
        if node is None:
            return
        state = self._records.get(slot)
        try:
            if state is not None and time.monotonic() < state[3]:
                # The generation read lately: a plain SET (a clear by another client since
                # then may lose this write, which is then a miss, never an older value).
                stamped = state[1] + payload
                yield (CMD, ("SET", raw, stamped, "PX", px) if px else ("SET", raw, stamped))
            else:  # the script stamps the current generation, and says which it was
                keys = (raw, self._record_key_of(slot))
                self._note(slot, (yield from self._script(scripts.PUT, keys, payload, px)))
        except Exception as exc:
            self._fault(node, exc, "a set")
            self._writes.failed([raw])
            return
        if node.dead_until or self._main.dead_until:
            self._up(node)
        self._sets += 1

    def put(self, key: Key, value: Any, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; dropped (counted, logged) if Redis is down."""
        _run(self._put(key, value, ttl), self._topology)

    async def aput(self, key: Key, value: Any, ttl: float) -> None:
        """Awaitable :meth:`put` (native asyncio)."""
        await _arun(self._put(key, value, ttl), self._topology)

    def _put_many(self, items: Items, ttl: float) -> Op[list[Key]]:
        ttl = check_ttl(ttl)
        if isinstance(items, dict):
            items = items.items()
        px = self._px(ttl)
        planned: dict[bytes, bytes] = {}
        keys: dict[bytes, Key] = {}
        for key, value in items:
            raw, encoded = self._map_key(key)
            planned[raw] = self._encode(key, encoded, value, ttl)
            keys[raw] = key
        usable = yield from self._usable(list(planned), "a multi-set")
        unreached = [raw for raw in planned if raw not in usable]
        if unreached:
            self._writes.failed(unreached)
        commands = []
        raws = []
        for raw, payload in planned.items():
            if raw in usable:
                record_key = self._record_key_of(self._slot(raw))
                commands.append(("EVALSHA", scripts.PUT.sha, 2, raw, record_key, payload, px))
                raws.append(raw)
        if not commands:
            return [keys[raw] for raw in unreached]
        replies = yield from self._pipe_scripts(commands, scripts.PUT)
        failed = [(raw, r) for raw, r in zip(raws, replies, strict=True) if _failed(r)]
        self._sets += len(raws) - len(failed)
        if failed:
            self._fault(usable[failed[0][0]], failed[0][1], "a multi-set")
            self._dropped([raw for raw, _ in failed[1:]])
            self._writes.failed([failed[0][0]])
        return [keys[raw] for raw in unreached] + [keys[raw] for raw, _ in failed]

    def _pipe_scripts(
        self, commands: list[tuple[Any, ...]], script: scripts.Script
    ) -> Op[list[Any]]:
        """Replies of ``EVALSHA`` commands sent together (a failed one is its exception);
        those that met a server without the script go again as ``EVAL``."""
        replies: list[Any] = yield (PIPE, commands)
        again = [i for i, r in enumerate(replies) if type(r).__name__ == "NoScriptError"]
        if again:
            retried = [("EVAL", script.source, *commands[i][2:]) for i in again]
            answers = yield (PIPE, retried)
            for i, answer in zip(again, answers, strict=True):
                replies[i] = answer
        return replies

    def putMulti(self, items: Items, ttl: float) -> list[Key]:
        """Store many pairs with one ttl, one round trip per node; return the keys that
        could not be stored (their node down or failing)."""
        return _run(self._put_many(items, ttl), self._topology)

    async def aputMulti(self, items: Items, ttl: float) -> list[Key]:
        """Awaitable :meth:`putMulti` (native asyncio)."""
        return await _arun(self._put_many(items, ttl), self._topology)

    def _add(self, key: Key, value: Any, ttl: float) -> Op[bool]:
        raw, payload, slot, px, node = yield from self._prepare(key, value, ttl, "an add")
        if node is None:
            return False
        keys = (raw, self._record_key_of(slot))
        try:
            stored = yield from self._script(scripts.ADD, keys, payload, px, repr(time.time()))
        except Exception as exc:
            self._fault(node, exc, "an add")
            self._writes.failed([raw])
            return False
        self._up(node)
        if stored:
            self._sets += 1
        return bool(stored)

    def add(self, key: Key, value: Any, ttl: float) -> bool:
        """Store only if ``key`` has no live entry; one atomic command (a script)."""
        return _run(self._add(key, value, ttl), self._topology)

    async def aadd(self, key: Key, value: Any, ttl: float) -> bool:
        """Awaitable :meth:`add` (native asyncio)."""
        return await _arun(self._add(key, value, ttl), self._topology)

    def _delete(self, key: Key) -> Op[None]:
        raw, _ = self._map_key(key)
        node = yield from self._node_for(raw, "a delete")
        if node is None:
            self._writes.failed([raw])
            return
        try:
            yield (CMD, ("DEL", raw))
        except Exception as exc:
            self._fault(node, exc, "a delete")
            self._writes.failed([raw])
            return
        self._up(node)

    def delete(self, key: Key) -> None:
        """Remove ``key``."""
        _run(self._delete(key), self._topology)

    async def adelete(self, key: Key) -> None:
        """Awaitable :meth:`delete` (native asyncio)."""
        await _arun(self._delete(key), self._topology)

    # ---- read-modify-write: compare-and-set on the entry's signature --------------------------

    def _read_for_update(
        self, key: Key, raw: bytes, encoded: bytes
    ) -> Op[tuple[bytes, bytes, Entry] | None]:
        """``(record key, tag, (value, expires))`` of the stored entry, or None."""
        slot = self._slot(raw)
        record_key = self._record_key_of(slot)
        data, record = yield (CMD, ("MGET", raw, record_key))
        entry = self._decode(key, encoded, data, self._note(slot, record))
        if entry is None:
            return None
        return record_key, data[-_TAG_SIZE:], entry

    def _rewrite(self, key: Key, new_ttl: Callable[[float], float], what: str) -> Op[bool]:
        """Re-sign the entry of ``key`` with the ttl ``new_ttl(ttl_left)`` (renew, expire)."""
        raw, encoded = self._map_key(key)
        node = yield from self._node_for(raw, what)
        if node is None:
            return False
        try:
            for _ in range(_CAS_ATTEMPTS):
                found = yield from self._read_for_update(key, raw, encoded)
                self._up(node)
                if found is None:
                    return False
                record_key, tag, (value, expires) = found
                ttl = new_ttl(expires - time.time())
                payload = self._encode(key, encoded, value, ttl)
                done = yield from self._script(
                    scripts.CAS, (raw, record_key), payload, self._px(ttl), tag
                )
                if done:
                    return bool(done > 0)
        except Exception as exc:
            self._fault(node, exc, what)
            self._writes.failed([raw])
        return False

    def renew(self, key: Key, ttl: float) -> bool:
        """Keep an existing entry (stale or not) alive at least ``ttl`` seconds from now (a
        later expiry stays); False if absent."""
        ttl = check_ttl(ttl)
        return _run(self._rewrite(key, lambda left: max(left, ttl), "a renew"), self._topology)

    async def arenew(self, key: Key, ttl: float) -> bool:
        """Awaitable :meth:`renew` (native asyncio)."""
        ttl = check_ttl(ttl)
        renewed = self._rewrite(key, lambda left: max(left, ttl), "a renew")
        return await _arun(renewed, self._topology)

    def expire(self, key: Key) -> None:
        """Mark the entry stale now; ``getTtl`` still returns it for ``stale_grace`` seconds."""
        _run(self._rewrite(key, _stale, "an expire"), self._topology)

    async def aexpire(self, key: Key) -> None:
        """Awaitable :meth:`expire` (native asyncio)."""
        await _arun(self._rewrite(key, _stale, "an expire"), self._topology)

    def _update(self, key: Key, fn: Callable[[Any], Any], ttl: float | None) -> Op[Entry]:
        if ttl is not None:
            ttl = check_ttl(ttl)
        raw, encoded = self._map_key(key)
        node = yield from self._node_for(raw, "an update")
        if node is None:
            raise CacheMissError(key)
        for attempt in range(_UPDATE_ATTEMPTS):
            try:
                found = yield from self._read_for_update(key, raw, encoded)
            except Exception as exc:
                self._fault(node, exc, "an update")
                raise CacheMissError(key) from exc
            self._up(node)
            now = time.time()
            if found is None or found[2][1] <= now:
                raise CacheMissError(key)
            record_key, tag, (value, expires) = found
            new = fn(value)
            if inspect.isawaitable(new):
                new = yield (AWAIT, new)
            new_ttl = expires - now if ttl is None else ttl
            payload = self._encode(key, encoded, new, new_ttl)
            try:
                done = yield from self._script(
                    scripts.CAS, (raw, record_key), payload, self._px(new_ttl), tag
                )
            except Exception as exc:
                self._fault(node, exc, "an update")
                self._writes.failed([raw])
                raise CacheMissError(key) from exc
            if done > 0:
                self._sets += 1
                return new, new_ttl
            if done < 0:
                raise CacheMissError(key)
            yield (SLEEP, _update_backoff(attempt))
        raise RuntimeError(
            f"update of cache key {key!r} lost {_UPDATE_ATTEMPTS} compare-and-set races in a row"
        )

    def update(self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None) -> Any:
        """Atomically replace the live value of ``key`` by ``fn(value)``; return the new value.

        Compare-and-set on the entry's signature (a script): if another client wrote the
        entry between the read and the write, ``fn`` runs again on the newer value, up to 64
        times with a short random back-off, then ``RuntimeError``. ``ttl=None`` keeps the
        time the entry had left. A missing or stale entry, or a down server, raises
        :class:`~chorde.CacheMissError`; what ``fn`` raises propagates.
        """
        return self.updateTtl(key, fn, ttl)[0]

    def updateTtl(
        self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """:meth:`update`, returning ``(new value, ttl_left)``."""
        return _run(self._update(key, fn, ttl), self._topology)

    async def aupdate(self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None) -> Any:
        """Awaitable :meth:`update` (native asyncio); ``fn`` may be a coroutine function."""
        return (await self.aupdateTtl(key, fn, ttl))[0]

    async def aupdateTtl(
        self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """Awaitable :meth:`updateTtl` (native asyncio)."""
        return await _arun(self._update(key, fn, ttl), self._topology)

    # ---- the namespace: clear, purge ----------------------------------------------------------

    def _record_keys_all(self) -> list[bytes]:
        return [self._record_key] if self._record_keys is None else self._record_keys

    def _clear(self) -> Op[bool]:
        """A new generation on every record; True when every one was written."""
        record = _RECORD.pack(os.urandom(_GEN_SIZE), 0.0)
        keys = self._record_keys_all()
        try:
            if len(keys) == 1:
                replies = [(yield (CMD, ("SET", keys[0], record)))]
            else:
                replies = yield (PIPE, [("SET", k, record) for k in keys])
        except Exception as exc:
            replies = [exc]
        failures = [r for r in replies if _failed(r)]
        if failures:
            self._fault(None if self._is_cluster else self._main, failures[0], "a clear")
            self._writes.owe_clear()
            return False
        self._writes.cleared()
        self._records.clear()
        self._up(self._main)
        return True

    def clear(self) -> None:
        """Invalidate every entry of this namespace (a new generation; never FLUSHDB)."""
        _run(self._clear(), self._topology)

    async def aclear(self) -> None:
        """Awaitable :meth:`clear` (native asyncio)."""
        await _arun(self._clear(), self._topology)

    def _purge(self, timeout: float) -> Op[None]:
        horizon = _HORIZON.pack(time.time() - check_ttl(timeout, "timeout"))
        keys = self._record_keys_all()
        commands = [("EVALSHA", scripts.HORIZON.sha, 1, k, horizon) for k in keys]
        replies = yield from self._pipe_scripts(commands, scripts.HORIZON)
        failures = [r for r in replies if _failed(r)]
        if failures:
            self._fault(None if self._is_cluster else self._main, failures[0], "a purge")
        self._records.clear()

    def purge(self, timeout: float = 0) -> None:
        """Hide, for every client of the namespace, entries expired over ``timeout`` s ago.

        Redis frees them itself once their key expires (``stale_grace`` after the logical
        expiry); purging raises the horizon kept in the namespace's record, so ``getTtl``
        stops returning them at once.
        """
        _run(self._purge(timeout), self._topology)

    async def apurge(self, timeout: float = 0) -> None:
        """Awaitable :meth:`purge` (native asyncio)."""
        await _arun(self._purge(timeout), self._topology)

    # ---- leases (see chorde.leases): a key of its own beside the entry, SET NX PX ----------------

    def _lease_key(self, raw: bytes, slot: int) -> bytes:
        """The key of ``raw``'s lease: in a Cluster, tagged with ``raw``'s slot (scripts reach
        one slot)."""
        if self._record_keys is None:
            return self._lease_prefix + b"." + raw
        return self._lease_prefix + b"{" + _tags()[slot] + b"}." + raw

    def _lease_read(self, key: Key, accept: Callable[[Any, float], bool]) -> Op[LeaseRead]:
        raw, encoded = self._map_key(key)
        node = yield from self._node_for(raw, "a lease read")
        if node is None:
            return LeaseRead(UNAVAILABLE)
        slot = self._slot(raw)
        keys = (raw, self._record_key_of(slot), self._lease_key(raw, slot))
        try:
            data, record, holder = yield (CMD, ("MGET", *keys))
            value, ttl_left = self._held(key, encoded, data, slot, record)
            if value is not NONE and accept(value, ttl_left):
                self._up(node)
                return LeaseRead(HIT, value, ttl_left)
            if holder is not None:
                self._up(node)
                return LeaseRead(BUSY, value, ttl_left)
            token = os.urandom(8).hex()
            px = max(1, int(self.lease_ttl * 1000))
            data, record, won = yield from self._script(scripts.LEASE, keys, token, px)
            value, ttl_left = self._held(key, encoded, data, slot, record)
            if won and value is not NONE and accept(value, ttl_left):
                yield from self._script(scripts.RELEASE, keys[2:], token)  # stored meanwhile
                won = 0
        except Exception as exc:
            self._fault(node, exc, "a lease read")
            return LeaseRead(UNAVAILABLE)
        self._up(node)
        if won:
            return LeaseRead(WON, value, ttl_left, token)
        if value is not NONE and accept(value, ttl_left):
            return LeaseRead(HIT, value, ttl_left)
        return LeaseRead(BUSY, value, ttl_left)

    def _held(
        self, key: Key, encoded: bytes, data: bytes | None, slot: int, record: bytes | None
    ) -> tuple[Any, float]:
        """``(value, ttl_left)`` of what a read found, ``(NONE, -1.0)`` for nothing valid."""
        entry = self._decode(key, encoded, data, self._note(slot, record))
        if entry is None:
            return NONE, -1.0
        return entry[0], entry[1] - time.time()

    def lease_read(self, key: Key, accept: Callable[[Any, float], bool]) -> LeaseRead:
        """Read ``key``; unless ``accept(value, ttl_left)`` likes the value held, take its
        lease if nobody holds it (see :mod:`chorde.leases`)."""
        return _run(self._lease_read(key, accept), self._topology)

    async def alease_read(self, key: Key, accept: Callable[[Any, float], bool]) -> LeaseRead:
        """Awaitable :meth:`lease_read` (native asyncio)."""
        return await _arun(self._lease_read(key, accept), self._topology)

    def _lease_release(self, key: Key, token: Any) -> Op[None]:
        raw, _ = self._map_key(key)
        node = yield from self._node_for(raw, "a lease release")
        if node is None:
            return  # (it lapses by itself)
        lease = self._lease_key(raw, self._slot(raw))
        try:
            yield from self._script(scripts.RELEASE, (lease,), token)
        except Exception as exc:
            self._fault(node, exc, "a lease release")

    def _lease_put(self, key: Key, value: Any, ttl: float, token: Any) -> Op[None]:
        yield from self._put(key, value, ttl)
        yield from self._lease_release(key, token)

    def lease_put(self, key: Key, value: Any, ttl: float, token: Any) -> None:
        """Store the value computed under the lease ``token`` (from :meth:`lease_read`) and
        end the lease."""
        _run(self._lease_put(key, value, ttl, token), self._topology)

    async def alease_put(self, key: Key, value: Any, ttl: float, token: Any) -> None:
        """Awaitable :meth:`lease_put` (native asyncio)."""
        await _arun(self._lease_put(key, value, ttl, token), self._topology)

    def lease_release(self, key: Key, token: Any) -> None:
        """Give the lease ``token`` back, storing nothing: the next reader may take it."""
        _run(self._lease_release(key, token), self._topology)

    async def alease_release(self, key: Key, token: Any) -> None:
        """Awaitable :meth:`lease_release` (native asyncio)."""
        await _arun(self._lease_release(key, token), self._topology)

    # ---- introspection ------------------------------------------------------------------------

    def _info(self, section: str) -> Op[list[dict[str, Any]]]:
        main = self._main
        if main.dead_until and not main.usable():
            return []
        try:
            found: list[dict[str, Any]] = yield (INFO, section)
        except Exception as exc:
            self._fault(main, exc, "INFO")
            return []
        return found

    @property
    def capacity(self) -> int:
        """Memory the reachable masters may use, in bytes (their ``maxmemory``, else the
        machine's memory)."""
        found = _run(self._info("memory"), self._topology)
        return sum(
            int(i.get("maxmemory") or 0) or int(i.get("total_system_memory") or 0) for i in found
        )

    @property
    def usage(self) -> int:
        """Bytes used on the reachable masters (every namespace)."""
        return sum(
            int(i.get("used_memory") or 0) for i in _run(self._info("memory"), self._topology)
        )

    @property
    def stats(self) -> CacheStats:
        """Client-side counters (evictions are the server's business, reported as 0)."""
        return CacheStats(self._hits, self._misses, self._sets, 0, self._errors)

    def redis_client(self) -> Any:
        """The blocking redis-py (or valkey-py) client this client talks through, with its
        servers, credentials and timeouts: for what the cache contract does not cover
        (pub/sub for a coherence bus, commands of your own outside this namespace)."""
        return self._topology.sync()

    def redis_aclient(self) -> Any:
        """The running event loop's asyncio client (as :meth:`redis_client`); None when the
        client object was given without an asyncio twin."""
        if not self._topology.native_async:
            return None
        return self._topology.for_loop(asyncio.get_running_loop())

    def close(self) -> None:
        """Close the connections (those of running event loops on their loop)."""
        self._topology.close()

    async def aclose(self) -> None:
        """Close the running loop's connections, then the others."""
        await self._topology.aclose()

    def __repr__(self) -> str:
        where = getattr(getattr(self, "_topology", None), "name", "?")
        return f"<RedisClient {where} namespace={getattr(self, 'namespace', '?')!r}>"


def _failed(reply: Any) -> bool:
    return isinstance(reply, BaseException)
