"""A toy cache backend living outside chorde, registered as ``toy://`` by URL.

It proves the extension point: a package adds a scheme with
:func:`chorde.clients.register_scheme` (or an entry point in the ``chorde.clients`` group),
and every adapter, decorator and test stack can then use it by URL, with no chorde file
touched. The store is a plain dict per URL host, shared by the clients of one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from chorde import CacheMissError
from chorde.clients import register_scheme
from chorde.clients.base import BaseCacheClient, CacheStats, check_ttl
from chorde.clients.urls import ClientURL
from chorde.sentinel import NONE

__all__ = ["ToyClient", "stores"]

#: Every toy store of this process, by URL host ("toy://shop" -> stores["shop"]).
stores: dict[str, dict[Hashable, tuple[Any, float]]] = {}
_lock = threading.Lock()


def _check(key: Any) -> None:
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"cache keys must be hashable, got {key!r}") from None


class ToyClient(BaseCacheClient):
    """A dict: no eviction beyond ``size``-bound refusal, expiry by a clock."""

    def __init__(self, name: str, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        with _lock:
            self._data = stores.setdefault(name, {})
        self._size = size
        self._clock = clock
        self._hits = self._misses = self._sets = 0

    def getTtl(self, key: Hashable, default: Any = NONE) -> tuple[Any, float]:
        _check(key)
        entry = self._data.get(key)
        if entry is None:
            self._misses += 1
            if default is NONE:
                raise CacheMissError(key)
            return default, -1.0
        self._hits += 1
        value, expires = entry
        return value, expires - self._clock()

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        ttl = check_ttl(ttl)
        _check(key)
        if key not in self._data and len(self._data) >= self._size:
            self._data.pop(next(iter(self._data)))
        self._data[key] = (value, self._clock() + ttl)
        self._sets += 1

    def add(self, key: Hashable, value: Any, ttl: float) -> bool:
        entry = self._data.get(key)
        if entry is not None and entry[1] > self._clock():
            return False
        self.put(key, value, ttl)
        return True

    def delete(self, key: Hashable) -> None:
        _check(key)
        self._data.pop(key, None)

    def renew(self, key: Hashable, ttl: float) -> bool:
        ttl = check_ttl(ttl)
        entry = self._data.get(key)
        if entry is None:
            return False
        self._data[key] = (entry[0], max(entry[1], self._clock() + ttl))
        return True

    def expire(self, key: Hashable) -> None:
        entry = self._data.get(key)
        if entry is not None:
            self._data[key] = (entry[0], min(entry[1], self._clock()))

    def clear(self) -> None:
        self._data.clear()

    def purge(self, timeout: float = 0) -> None:
        horizon = self._clock() - timeout
        for key, (_, expires) in list(self._data.items()):
            if expires <= horizon:
                self._data.pop(key, None)

    @property
    def capacity(self) -> int:
        return self._size

    @property
    def usage(self) -> int:
        return len(self._data)

    @property
    def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, self._sets)


def _factory(url: ClientURL) -> BaseCacheClient:
    name = url.hosts[0] if url.hosts else "default"
    return ToyClient(name, url.pop("size", int, 1000), url.pop("clock", str, time.monotonic))


register_scheme("toy", _factory, replace=True)
