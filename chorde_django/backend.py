"""``ChordeCache``: a Django cache backend over a chorde client stack."""

from __future__ import annotations

import math
import pickle
import re
import sys
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, cast

from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    MEMCACHE_MAX_KEY_LENGTH,
    BaseCache,
    default_key_func,
)
from django.core.exceptions import ImproperlyConfigured

from chorde.clients.base import BaseCacheClient
from chorde.errors import CacheMissError
from chorde_django._config import Stack, parse, shared_client

__all__ = ["ChordeCache"]

_MISS: Any = object()
_PROTOCOL = pickle.HIGHEST_PROTOCOL
# Immutable values need no copy: stored as they are, they cost no pickling at all.
_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
# The characters Django's memcache_key_warnings() warns about.
_bad_key_char = re.compile(r"[\x00-\x20\x7f]").search


class _Pickled(bytes):
    """A value the backend pickled, so each reader gets its own copy (as LocMemCache does)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Pickled, (bytes(self),))


def _copy_in(value: Any) -> Any:
    if value.__class__ in _SCALARS:
        return value
    return _Pickled(pickle.dumps(value, _PROTOCOL))


def _as_is(value: Any) -> Any:
    return value


def _copy_out(value: Any) -> Any:
    if value.__class__ is _Pickled:
        return pickle.loads(value)
    return value


def _alias_of(params: dict[str, Any]) -> str:
    """The CACHES alias ``params`` were copied from (Django copies the dict shallowly)."""
    from django.conf import settings

    options = params.get("OPTIONS")
    try:
        for alias, entry in settings.CACHES.items():
            if entry is params or (options and entry.get("OPTIONS") is options):
                return str(alias)
    except Exception:  # settings not configured, CACHES malformed: no alias to name
        pass
    return ""


def _in_system_checks() -> bool:
    from django.core.checks.registry import CheckRegistry

    run_checks = CheckRegistry.run_checks.__code__
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is run_checks:
            return True
        frame = frame.f_back
    return False


def _unconfigured(exc: ImproperlyConfigured) -> Any:
    def build() -> BaseCacheClient:
        raise exc

    return build


class _Unconfigured:
    """Stands in for the client of a backend built with bad OPTIONS during system checks."""

    def __init__(self, exc: ImproperlyConfigured) -> None:
        self._exc = exc

    def __getattr__(self, name: str) -> Any:
        raise self._exc

    def __repr__(self) -> str:
        return f"<unconfigured: {self._exc}>"


class ChordeCache(BaseCache):
    """A Django cache backend whose storage is a chorde client stack.

    ``CACHES = {"default": {"BACKEND": "chorde_django.ChordeCache", "LOCATION": ...,
    "TIMEOUT": ..., "KEY_PREFIX": ..., "VERSION": ..., "KEY_FUNCTION": ..., "OPTIONS": {...}}}``

    ``OPTIONS["CLIENT"]`` picks the stack; without it an empty ``LOCATION`` means
    ``"inproc"`` and anything else ``"memcached"``:

    ``"inproc"``
        A process-private LRU (:class:`chorde.clients.inproc.InprocCacheClient`).
        ``LOCATION`` names the store: every backend with the same LOCATION in a process
        shares it, as with ``LocMemCache`` (the first one built fixes its size).
        ``SIZE`` (alias ``MAX_ENTRIES``, default 10,000 entries), ``STORE`` (``"lru"``,
        ``"lru-notouch"`` or ``"cuckoo"``).
    ``"memcached"``
        :class:`chorde.clients.memcached.MemcachedClient`. ``LOCATION`` (or ``SERVERS``)
        is ``"host:port;host:port"`` or a list; ``NAMESPACE`` (default ``""``) scopes
        ``clear()``, which invalidates the namespace instead of flushing the servers.
    ``"tiered"``
        An in-process L1 in front of memcached: the memcached options plus ``L1_SIZE``
        (10,000), ``L1_STORE`` and ``L1_TTL`` (seconds an entry may live in L1, default 5:
        writes made by other processes are seen here within that time).
    ``"elasticache"``
        ``ElastiCacheClient``; ``LOCATION`` (or ``CONFIG_ENDPOINT``) is the cluster's
        configuration endpoint. Needs ``chorde.clients.elasticache``.
    ``"files"``
        ``FilesCacheClient``, a host-wide cache on disk; ``LOCATION`` (or ``PATH``) is its
        directory, ``SIZE`` its bound in bytes. Needs ``chorde.clients.files``.

    Every stack but ``"inproc"`` also takes ``CHECKSUM_KEY`` (the secret that signs
    values, or a list for rotation; default: derived by HMAC-SHA256 from ``SECRET_KEY``
    and ``SECRET_KEY_FALLBACKS``, never the secret itself) and ``CLIENT_OPTIONS``, a dict of
    keyword arguments for the client's constructor (``{"timeout": 0.5}``).

    Semantics are Django's: ``TIMEOUT=None`` keeps entries until evicted, ``0`` or less
    expires them at once; keys memcached would refuse only warn (``CacheKeyWarning``),
    since chorde digests long or odd keys; values are copies (in-process stacks pickle
    them, except immutable scalars); ``incr``/``decr`` raise ``ValueError`` for a missing
    key and are atomic: under a lock per store in-process, a ``gets``/``cas`` loop on
    memcached (the tiered stack runs it on memcached and refreshes L1 under a process
    lock), a process-local lock only for ``"files"``. ``close()`` keeps the shared client
    open (it is pooled and shared by every thread); :func:`chorde_django.close_clients`
    closes them all.

    The async methods run inline, without a thread hop, on in-process stacks; on
    network stacks they go through the client's awaitable methods (``incr``/``decr``'s
    compare-and-swap loop runs on an executor as one unit).

    ``.client`` is the underlying chorde client (for ``@cached``, stats, ...).
    """

    def __init__(self, location: Any, params: dict[str, Any]) -> None:
        super().__init__(params)
        try:
            self._stack: Stack = parse(location, params, alias=_alias_of(params))
        except ImproperlyConfigured as exc:
            if not _in_system_checks():
                raise
            # Django's own cache checks instantiate every alias; raising here would crash
            # the check run before chorde_django.checks reports this error properly.
            self._stack = Stack("unconfigured", None, _unconfigured(exc), False)
            # A stand-in: any use of it raises the configuration error.
            self._client = cast(BaseCacheClient, _Unconfigured(exc))
            self._blocking = False
            self._copy_in = _as_is
            self._default_ttl = 0.0
            self._plain_keys = False
            return
        self._client = shared_client(self._stack)
        self._blocking = self._client.blocking
        self._copy_in = _copy_in if self._stack.local_values else _as_is
        self._default_ttl = math.inf if self.default_timeout is None else self.default_timeout
        cls = type(self)
        self._plain_keys = (
            cls.make_key is BaseCache.make_key and cls.validate_key is BaseCache.validate_key
        )

    def make_and_validate_key(self, key: Any, version: Any = None) -> str:
        """Django's key (``KEY_PREFIX:VERSION:key``), warning on keys memcached would refuse."""
        if self._plain_keys and self.key_func is default_key_func:
            # Django's own make_key + validate_key, inlined: this runs on every call.
            ver = self.version if version is None else version
            # default_key_func's own formatting (str() of each part), not an f-string's.
            made = "%s:%s:%s" % (self.key_prefix, ver, key)  # noqa: UP031
            if len(made) > MEMCACHE_MAX_KEY_LENGTH or _bad_key_char(made) is not None:
                self.validate_key(made)
            return made
        return super().make_and_validate_key(key, version=version)

    @property
    def client(self) -> BaseCacheClient:
        """The chorde client this backend stores into (shared within the process)."""
        return self._client

    @property
    def stack(self) -> str:
        """Which stack this backend runs: ``"inproc"``, ``"memcached"``, ``"tiered"``, ..."""
        return self._stack.kind

    def _ttl(self, timeout: Any) -> float:
        if timeout is DEFAULT_TIMEOUT:
            return self._default_ttl
        if timeout is None:
            return math.inf
        return float(timeout)

    # ---- sync API ----------------------------------------------------------------------

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        """Store only if ``key`` has no live entry; return whether it was stored."""
        key = self.make_and_validate_key(key, version=version)
        value = self._copy_in(value)
        ttl = self._ttl(timeout)
        if ttl <= 0:
            return not self._client.contains(key)
        return self._client.add(key, value, ttl)

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        """Return the live value of ``key``, or ``default``."""
        key = self.make_and_validate_key(key, version=version)
        value = self._client.get(key, _MISS)
        if value is _MISS:
            return default
        if value.__class__ is _Pickled:
            return pickle.loads(value)
        return value

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        """Store ``value`` under ``key`` (a timeout <= 0 deletes it)."""
        key = self.make_and_validate_key(key, version=version)
        value = self._copy_in(value)
        ttl = self._ttl(timeout)
        if ttl > 0:
            self._client.put(key, value, ttl)
        else:
            self._client.delete(key)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        """Give a live entry a new timeout; False if there is none."""
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        client = self._client
        if ttl <= 0:
            if not client.contains(key):
                return False
            client.delete(key)
            return True
        return client.touch(key, ttl)

    def delete(self, key: Any, version: Any = None) -> bool:
        """Remove ``key``; return whether it had a live entry."""
        key = self.make_and_validate_key(key, version=version)
        existed = self._client.contains(key)
        self._client.delete(key)
        return existed

    def has_key(self, key: Any, version: Any = None) -> bool:
        """True if ``key`` has a live entry."""
        key = self.make_and_validate_key(key, version=version)
        return self._client.contains(key)

    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        """Return ``{key: value}`` for the keys with live entries (one batch)."""
        made = {self.make_and_validate_key(k, version=version): k for k in keys}
        if not made:
            return {}
        return self._found(made, self._client.getMulti(list(made), _MISS))

    @staticmethod
    def _found(made: dict[str, Any], pairs: Iterable[tuple[Any, Any]]) -> dict[Any, Any]:
        out = {}
        for key, value in pairs:
            if value is not _MISS:
                out[made[key]] = pickle.loads(value) if value.__class__ is _Pickled else value
        return out

    def set_many(
        self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> list[Any]:
        """Store every pair (one batch); return the keys that could not be stored."""
        made, items = self._prepare_many(data, version)
        if not items:
            return []
        ttl = self._ttl(timeout)
        client = self._client
        if ttl <= 0:
            for key, _ in items:
                client.delete(key)
            return []
        return [made[cast(str, key)] for key in client.putMulti(items, ttl)]

    def _prepare_many(
        self, data: dict[Any, Any], version: Any
    ) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
        made: dict[str, Any] = {}
        items: list[tuple[str, Any]] = []
        copy_in = self._copy_in
        for key, value in data.items():
            made_key = self.make_and_validate_key(key, version=version)
            made[made_key] = key
            items.append((made_key, copy_in(value)))
        return made, items

    def delete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        """Remove every key."""
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        for key in made:
            self._client.delete(key)

    def clear(self) -> None:
        """Remove every entry of the store (in-process) or namespace (memcached)."""
        self._client.clear()

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: the client is shared and pooled (see :func:`close_clients`)."""

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        """Add ``delta`` to the value of ``key`` atomically; ValueError if it is missing."""
        key = self.make_and_validate_key(key, version=version)
        box: list[Any] = []
        try:
            self._client.update(key, self._adder(delta, box))
        except CacheMissError:
            raise ValueError(f"Key '{key}' not found") from None
        return box[-1]

    def _adder(self, delta: Any, box: list[Any]) -> Callable[[Any], Any]:
        """``fn`` for the client's update: the stored (maybe copied) value plus ``delta``.

        The new plain value goes into ``box`` (a stack stores a pickled copy of it).
        """
        copy_in = self._copy_in

        def add(value: Any) -> Any:
            new = _copy_out(value) + delta
            box.append(new)
            return copy_in(new)

        return add

    def decr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        """Subtract ``delta`` atomically; ValueError if the key is missing."""
        return self.incr(key, -delta, version=version)

    # ---- async API: inline on in-process stacks, the client's awaitables otherwise ------

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        """Awaitable :meth:`add`."""
        if not self._blocking:
            return self.add(key, value, timeout, version)
        key = self.make_and_validate_key(key, version=version)
        value = self._copy_in(value)
        ttl = self._ttl(timeout)
        if ttl <= 0:
            return not await self._client.acontains(key)
        return await self._client.aadd(key, value, ttl)

    async def aget(self, key: Any, default: Any = None, version: Any = None) -> Any:
        """Awaitable :meth:`get`."""
        if not self._blocking:
            return self.get(key, default, version)
        key = self.make_and_validate_key(key, version=version)
        value = await self._client.aget(key, _MISS)
        if value is _MISS:
            return default
        return _copy_out(value)

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        """Awaitable :meth:`set`."""
        if not self._blocking:
            return self.set(key, value, timeout, version)
        key = self.make_and_validate_key(key, version=version)
        value = self._copy_in(value)
        ttl = self._ttl(timeout)
        if ttl > 0:
            await self._client.aput(key, value, ttl)
        else:
            await self._client.adelete(key)
        return None

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        """Awaitable :meth:`touch`."""
        if not self._blocking:
            return self.touch(key, timeout, version)
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        client = self._client
        if ttl <= 0:
            if not await client.acontains(key):
                return False
            await client.adelete(key)
            return True
        return await client.atouch(key, ttl)

    async def adelete(self, key: Any, version: Any = None) -> bool:
        """Awaitable :meth:`delete`."""
        if not self._blocking:
            return self.delete(key, version)
        key = self.make_and_validate_key(key, version=version)
        existed = await self._client.acontains(key)
        await self._client.adelete(key)
        return existed

    async def ahas_key(self, key: Any, version: Any = None) -> bool:
        """Awaitable :meth:`has_key`."""
        if not self._blocking:
            return self.has_key(key, version)
        key = self.make_and_validate_key(key, version=version)
        return await self._client.acontains(key)

    async def aget_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        """Awaitable :meth:`get_many`."""
        if not self._blocking:
            return self.get_many(keys, version)
        made = {self.make_and_validate_key(k, version=version): k for k in keys}
        if not made:
            return {}
        return self._found(made, await self._client.agetMulti(list(made), _MISS))

    async def aset_many(
        self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> list[Any]:
        """Awaitable :meth:`set_many`."""
        if not self._blocking:
            return self.set_many(data, timeout, version)
        made, items = self._prepare_many(data, version)
        if not items:
            return []
        ttl = self._ttl(timeout)
        client = self._client
        if ttl <= 0:
            for key, _ in items:
                await client.adelete(key)
            return []
        return [made[cast(str, key)] for key in await client.aputMulti(items, ttl)]

    async def adelete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        """Awaitable :meth:`delete_many`."""
        if not self._blocking:
            return self.delete_many(keys, version)
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        for key in made:
            await self._client.adelete(key)
        return None

    async def aclear(self) -> None:
        """Awaitable :meth:`clear`."""
        if not self._blocking:
            return self.clear()
        return await self._client.aclear()

    async def aclose(self, **kwargs: Any) -> None:
        """Awaitable :meth:`close` (nothing to do)."""

    async def aincr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        """Awaitable :meth:`incr` (the client's own awaitable update)."""
        key = self.make_and_validate_key(key, version=version)
        box: list[Any] = []
        try:
            await self._client.aupdate(key, self._adder(delta, box))
        except CacheMissError:
            raise ValueError(f"Key '{key}' not found") from None
        return box[-1]

    async def adecr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        """Awaitable :meth:`decr`."""
        return await self.aincr(key, -delta, version=version)

    def __repr__(self) -> str:
        return f"<ChordeCache stack={self._stack.kind} client={self._client!r}>"
