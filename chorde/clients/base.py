"""The client contract every chorde cache client honours.

A client maps keys to values, each with a time to live (ttl, in seconds). The contract:

* ``get(key, default=NONE)`` returns the value, or ``default`` when given, or raises
  :class:`chorde.CacheMissError`. Expired entries are misses.
* ``getTtl(key, default=NONE)`` returns ``(value, ttl_left)``. An entry the client still
  holds after it expired comes back with a negative ``ttl_left`` (stale-while-revalidate
  needs it); a miss returns ``(default, -1.0)`` or raises when no default is given.
* ``put``/``add``/``delete``/``contains``/``renew``/``expire``/``clear``/``purge`` and the
  batch forms ``getMulti``/``getTtlMulti``/``putMulti``.
* Read-modify-write: ``update``/``updateTtl`` (compare-and-set style), ``incr`` and
  ``touch``, atomic within the client by default, natively where the backend offers it.
* ``a``-prefixed awaitable twins of every method (``aget``, ``aput`` ...). For clients that
  never block (in-process ones) they run inline; clients whose methods block
  (``blocking = True``) run them on an executor so the event loop is never blocked.
* ``is_async``, ``capacity``, ``usage`` and ``stats``.
"""

from __future__ import annotations

import asyncio
import functools
import numbers
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

from chorde.errors import CacheMissError, ConfigurationError
from chorde.sentinel import NONE

__all__ = [
    "BaseCacheClient",
    "CacheStats",
    "ClientWrapper",
    "Key",
    "check_capacity",
    "check_ttl",
]

Key = Hashable
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of a client's counters.

    The counters are cheap, unlocked integers: under heavy thread contention a few
    increments may be lost, which is the price of not locking the hot path.
    """

    hits: int = 0
    misses: int = 0
    sets: int = 0
    evictions: int = 0
    errors: int = 0

    def __add__(self, other: CacheStats) -> CacheStats:
        return CacheStats(
            self.hits + other.hits,
            self.misses + other.misses,
            self.sets + other.sets,
            self.evictions + other.evictions,
            self.errors + other.errors,
        )

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups, 0.0 when nothing was looked up."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def check_ttl(ttl: Any, name: str = "ttl") -> float:
    """Validate a ttl: a non-negative real number of seconds (``math.inf`` is forever)."""
    if isinstance(ttl, bool) or not isinstance(ttl, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, got {ttl!r}")
    seconds = float(ttl)
    if not seconds >= 0:  # also catches NaN
        raise ValueError(f"{name} must be >= 0, got {ttl!r}")
    return seconds


def check_capacity(size: Any, name: str = "size") -> int:
    """Validate a capacity: a positive integer."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {size!r}")
    capacity = int(size)
    if capacity <= 0:
        raise ValueError(f"{name} must be a positive integer, got {size!r}")
    return capacity


class BaseCacheClient(ABC):
    """Abstract base of every cache client; see the module docstring for the contract.

    Subclasses implement :meth:`getTtl`, :meth:`put`, :meth:`delete`, :meth:`clear`,
    :meth:`purge`, :meth:`renew`, :meth:`expire`, :meth:`add` and the ``capacity``/``usage``
    properties; everything else has a correct default built on those, which a subclass
    overrides where it can do better (one round trip, an atomic server operation ...).
    """

    #: True for clients whose writes complete in the background (write-behind).
    is_async: bool = False
    #: True when methods may block on I/O: the ``a*`` methods then use an executor.
    blocking: bool = False

    # ---- the core, implemented by every client -------------------------------------

    @abstractmethod
    def getTtl(self, key: Key, default: Any = NONE) -> tuple[Any, float]:
        """Return ``(value, ttl_left)``; stale entries may come back with ttl_left < 0."""

    @abstractmethod
    def put(self, key: Key, value: Any, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any entry."""

    @abstractmethod
    def add(self, key: Key, value: Any, ttl: float) -> bool:
        """Store only if the key is absent or expired; return whether it was stored."""

    @abstractmethod
    def delete(self, key: Key) -> None:
        """Remove the entry for ``key``, if any."""

    @abstractmethod
    def renew(self, key: Key, ttl: float) -> bool:
        """Keep an existing entry (stale or not) alive at least ``ttl`` seconds from now; an
        expiry already later stays (renew only extends: :meth:`touch` sets a ttl either
        way). Return whether the entry existed."""

    @abstractmethod
    def expire(self, key: Key) -> None:
        """Mark the entry stale now, keeping its value for ``getTtl`` (not ``get``)."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every entry."""

    @abstractmethod
    def purge(self, timeout: float = 0) -> None:
        """Drop entries that expired more than ``timeout`` seconds ago."""

    @property
    @abstractmethod
    def capacity(self) -> int:
        """How much the client can hold, in its own unit (entries, or bytes for files)."""

    @property
    @abstractmethod
    def usage(self) -> int:
        """How much it holds now, in the unit of :attr:`capacity`."""

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        return CacheStats()

    # ---- defaults built on the core ------------------------------------------------

    def get(self, key: Key, default: Any = NONE) -> Any:
        """Return the live value for ``key``, ``default`` if given, else raise a miss."""
        try:
            value, ttl = self.getTtl(key)
        except CacheMissError:
            if default is NONE:
                raise
            return default
        if ttl <= 0:
            if default is NONE:
                raise CacheMissError(key)
            return default
        return value

    def contains(self, key: Key, ttl: float | None = None) -> bool:
        """True if ``key`` has a live entry (with more than ``ttl`` seconds left, if given)."""
        try:
            left = self.getTtl(key)[1]
        except CacheMissError:
            return False
        return left > (ttl or 0)

    def getTtlMulti(self, keys: Iterable[Key], default: Any = NONE) -> Iterator[tuple[Key, Any]]:
        """Yield ``(key, (value, ttl_left))`` for each key; misses give ``(default, -1.0)``."""
        for key in keys:
            try:
                yield key, self.getTtl(key)
            except CacheMissError:
                yield key, (default, -1.0)

    def getMulti(self, keys: Iterable[Key], default: Any = NONE) -> Iterator[tuple[Key, Any]]:
        """Yield ``(key, value)`` for each key; misses and expired entries give ``default``."""
        for key, (value, ttl) in self.getTtlMulti(keys, NONE):
            yield key, value if value is not NONE and ttl > 0 else default

    def putMulti(self, items: Iterable[tuple[Key, Any]] | dict[Key, Any], ttl: float) -> list[Key]:
        """Store many ``(key, value)`` pairs (or a mapping) with one ttl; return the keys
        that could not be stored (a failed write of a shared backend), empty when all were."""
        if isinstance(items, dict):
            items = items.items()
        for key, value in items:
            self.put(key, value, ttl)
        return []

    # ---- read-modify-write: atomic within this client; shared backends override ------

    def updateTtl(
        self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """Replace the live value of ``key`` by ``fn(value)``; return ``(new, ttl_left)``.

        ``ttl`` is the new entry's ttl; None keeps the time it had left. A missing or stale
        entry raises :class:`~chorde.CacheMissError`; what ``fn`` raises propagates and
        leaves the entry as it was. This default is atomic among the threads using this
        client object (a lock per key stripe); clients whose entries other processes write
        (memcached ...) override it with the backend's own compare-and-set.
        """
        if ttl is not None:
            ttl = check_ttl(ttl)
        with _update_lock(self, key):
            value, left = self.getTtl(key)
            if left <= 0:
                raise CacheMissError(key)
            new = fn(value)
            new_ttl = left if ttl is None else ttl
            self.put(key, new, new_ttl)
        return new, new_ttl

    def update(self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None) -> Any:
        """:meth:`updateTtl`, returning only the new value."""
        return self.updateTtl(key, fn, ttl)[0]

    def incr(self, key: Key, delta: Any = 1) -> Any:
        """Add ``delta`` to the live value of ``key`` atomically (as :meth:`update`), keeping
        its ttl; return the new value. A missing key raises :class:`~chorde.CacheMissError`."""
        return self.updateTtl(key, lambda value: value + delta)[0]

    def touch(self, key: Key, ttl: float) -> bool:
        """Give the live entry of ``key`` a ttl of ``ttl`` seconds from now (longer or
        shorter); False when there is no live entry."""
        try:
            self.updateTtl(key, _same, ttl)
        except CacheMissError:
            return False
        return True

    def namespace_table(self, namespace: str) -> dict[Hashable, Any] | None:
        """A table of this client's entries of keys ``(namespace, *rest)``, which ``@cached``
        reads its hits from with ``namespace_get(table, rest, threshold, miss)`` (an
        in-process client's fast path); None, the default, when the client keeps none."""
        return None

    def close(self) -> None:
        """Release connections and threads; the client must not be used afterwards."""

    def wait(self, key: Key, timeout: float | None = None) -> None:
        """Wait until pending background writes of ``key`` are done (no-op when sync)."""

    # ---- awaitable twins -----------------------------------------------------------

    async def _call(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        if not self.blocking:
            return fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args))

    async def aget(self, key: Key, default: Any = NONE) -> Any:
        """Awaitable :meth:`get`."""
        return await self._call(self.get, key, default)

    async def agetTtl(self, key: Key, default: Any = NONE) -> tuple[Any, float]:
        """Awaitable :meth:`getTtl`."""
        return await self._call(self.getTtl, key, default)

    async def aput(self, key: Key, value: Any, ttl: float) -> None:
        """Awaitable :meth:`put`."""
        return await self._call(self.put, key, value, ttl)

    async def aadd(self, key: Key, value: Any, ttl: float) -> bool:
        """Awaitable :meth:`add`."""
        return await self._call(self.add, key, value, ttl)

    async def adelete(self, key: Key) -> None:
        """Awaitable :meth:`delete`."""
        return await self._call(self.delete, key)

    async def acontains(self, key: Key, ttl: float | None = None) -> bool:
        """Awaitable :meth:`contains`."""
        return await self._call(self.contains, key, ttl)

    async def arenew(self, key: Key, ttl: float) -> bool:
        """Awaitable :meth:`renew`."""
        return await self._call(self.renew, key, ttl)

    async def aexpire(self, key: Key) -> None:
        """Awaitable :meth:`expire`."""
        return await self._call(self.expire, key)

    async def aclear(self) -> None:
        """Awaitable :meth:`clear`."""
        return await self._call(self.clear)

    async def apurge(self, timeout: float = 0) -> None:
        """Awaitable :meth:`purge`."""
        return await self._call(self.purge, timeout)

    async def agetMulti(self, keys: Iterable[Key], default: Any = NONE) -> list[tuple[Key, Any]]:
        """Awaitable :meth:`getMulti`, returning a list of pairs."""
        keys = list(keys)
        return await self._call(lambda: list(self.getMulti(keys, default)))

    async def agetTtlMulti(
        self, keys: Iterable[Key], default: Any = NONE
    ) -> list[tuple[Key, tuple[Any, float]]]:
        """Awaitable :meth:`getTtlMulti`, returning a list of pairs."""
        keys = list(keys)
        return await self._call(lambda: list(self.getTtlMulti(keys, default)))

    async def aputMulti(
        self, items: Iterable[tuple[Key, Any]] | dict[Key, Any], ttl: float
    ) -> list[Key]:
        """Awaitable :meth:`putMulti`."""
        items = list(items.items() if isinstance(items, dict) else items)
        return await self._call(self.putMulti, items, ttl)

    async def aclose(self) -> None:
        """Awaitable :meth:`close`."""
        return await self._call(self.close)

    async def aupdateTtl(
        self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """Awaitable :meth:`updateTtl`."""
        return await self._call(self.updateTtl, key, fn, ttl)

    async def aupdate(self, key: Key, fn: Callable[[Any], Any], ttl: float | None = None) -> Any:
        """Awaitable :meth:`update`."""
        return (await self.aupdateTtl(key, fn, ttl))[0]

    async def aincr(self, key: Key, delta: Any = 1) -> Any:
        """Awaitable :meth:`incr`."""
        return (await self.aupdateTtl(key, lambda value: value + delta))[0]

    async def atouch(self, key: Key, ttl: float) -> bool:
        """Awaitable :meth:`touch`."""
        try:
            await self.aupdateTtl(key, _same, ttl)
        except CacheMissError:
            return False
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} usage={self.usage}/{self.capacity}>"


def _same(value: Any) -> Any:
    return value


_UPDATE_LOCKS = tuple(threading.Lock() for _ in range(64))


def _update_lock(client: BaseCacheClient, key: Key) -> threading.Lock:
    """The lock serialising default read-modify-writes of ``key`` on ``client``."""
    try:
        return _UPDATE_LOCKS[hash((id(client), key)) % len(_UPDATE_LOCKS)]
    except TypeError:
        raise TypeError(f"cache keys must be hashable, got {key!r}") from None


class ClientWrapper(BaseCacheClient):
    """A client in front of another one, ``self.client``: forwards what wrapping leaves alone.

    ``blocking`` and ``is_async`` come from the wrapped client (a subclass that is
    write-behind itself declares ``is_async = True``); ``capacity``, ``usage``, ``stats``,
    ``purge``, ``wait`` and ``close`` are forwarded. Reads and writes stay abstract: they
    are what a wrapper changes, and forwarding them by default would let a forgotten one
    bypass it.
    """

    def __init__(self, client: BaseCacheClient) -> None:
        if not isinstance(client, BaseCacheClient):
            raise ConfigurationError(f"client must be a cache client, got {client!r}")
        self.client = client
        self.blocking = client.blocking
        self.is_async = self.is_async or client.is_async

    def purge(self, timeout: float = 0) -> None:
        """Purge the wrapped client."""
        self.client.purge(timeout)

    def wait(self, key: Key, timeout: float | None = None) -> None:
        """Wait for the wrapped client's pending writes of ``key``."""
        self.client.wait(key, timeout)

    def close(self) -> None:
        """Close the wrapped client."""
        self.client.close()

    @property
    def capacity(self) -> int:
        """Capacity of the wrapped client."""
        return self.client.capacity

    @property
    def usage(self) -> int:
        """Usage of the wrapped client."""
        return self.client.usage

    @property
    def stats(self) -> CacheStats:
        """Counters of the wrapped client."""
        return self.client.stats


if not TYPE_CHECKING:  # (type checkers keep flagging unknown names)

    def __getattr__(name: str) -> Any:
        # chorde 1.x's names here: what replaced them (see chorde._legacy).
        from chorde import _legacy

        return _legacy.attribute(__name__, name)
