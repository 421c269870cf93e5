"""Inclusive multi-level caches: a small fast tier in front of bigger, slower ones."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

from chorde.clients.base import BaseCacheClient, CacheStats, check_ttl
from chorde.errors import CacheMissError, ConfigurationError
from chorde.sentinel import NONE

__all__ = ["TieredInclusiveClient"]

_MISS: Any = object()

#: ``promote(i, hits)`` copies the live ``(key, value, ttl)`` hits of tier ``i`` above it.
_Promote = Callable[[int, list[tuple[Hashable, Any, float]]], None]


def _fall_through_multi(
    tiers: Sequence[BaseCacheClient], keys: list[Hashable], default: Any, promote: _Promote
) -> tuple[list[tuple[Hashable, tuple[Any, float]]], int]:
    """Look ``keys`` up through ``tiers``, each asked only for the keys the ones above missed.

    A live hit is promoted into the tiers above its own with ``promote``; otherwise the
    freshest stale entry found wins. Shared with the coherent client, whose ``promote``
    undoes a promotion that an invalidation overtook.

    Returns the ``(key, (value, ttl))`` answer of every key (misses give ``(default, -1.0)``)
    and how many of them are live hits.
    """
    found: dict[Hashable, tuple[Any, float]] = {}
    remaining = list(dict.fromkeys(keys))
    for i, tier in enumerate(tiers):
        if not remaining:
            break
        missing = []
        live: list[tuple[Hashable, Any, float]] = []
        for key, (value, ttl) in tier.getTtlMulti(remaining, _MISS):
            if value is not _MISS and ttl > 0:
                found[key] = (value, ttl)
                live.append((key, value, ttl))
                continue
            if value is not _MISS and (key not in found or ttl > found[key][1]):
                found[key] = (value, ttl)
            missing.append(key)
        if i and live:
            promote(i, live)
        remaining = missing
    answer = [(key, found.get(key, (default, -1.0))) for key in keys]
    return answer, sum(1 for _, (_, ttl) in answer if ttl > 0)


class TieredInclusiveClient(BaseCacheClient):
    """Tiers of clients, first is fastest: ``TieredInclusiveClient(l1, l2, ...)``.

    Reads try each tier in order; a live hit in a lower tier is copied into the tiers above
    it with the ttl it has left (inclusive: upper tiers hold copies, not moved entries).
    Writes, deletes, renewals and expirations go to every tier. ``add`` is decided by the
    last tier, the most authoritative (usually the shared one). ``capacity`` and ``usage``
    are those of the last tier, which holds every entry the others hold.
    """

    def __init__(self, *clients: BaseCacheClient) -> None:
        if not clients:
            raise ConfigurationError("TieredInclusiveClient needs at least one client")
        for i, client in enumerate(clients):
            if not isinstance(client, BaseCacheClient):
                raise ConfigurationError(
                    f"tier {i} is {client!r}, not a cache client (BaseCacheClient)"
                )
        self.clients: tuple[BaseCacheClient, ...] = clients
        self.blocking = any(c.blocking for c in clients)
        self.is_async = any(c.is_async for c in clients)
        self._hits = 0
        self._misses = 0
        self._sets = 0

    def _promote(self, i: int, hits: list[tuple[Hashable, Any, float]]) -> None:
        for upper in self.clients[:i]:
            for key, value, ttl in hits:
                upper.put(key, value, ttl)

    def _find(self, key: Hashable) -> tuple[Any, float]:
        """Return the freshest ``(value, ttl)`` over the tiers, promoting a live hit."""
        # Not shared with the batch form: this is the L1-hit hot path, one call frame less.
        stale: tuple[Any, float] | None = None
        clients = self.clients
        for i, client in enumerate(clients):
            value, ttl = client.getTtl(key, _MISS)
            if value is _MISS:
                continue
            if ttl > 0:
                for upper in clients[:i]:
                    upper.put(key, value, ttl)
                self._hits += 1
                return value, ttl
            if stale is None or ttl > stale[1]:
                stale = (value, ttl)
        self._misses += 1
        return stale if stale is not None else (_MISS, -1.0)

    def get(self, key: Hashable, default: Any = NONE) -> Any:
        """Return the live value from the first tier that has it."""
        value, ttl = self._find(key)
        if ttl > 0:
            return value
        if default is NONE:
            raise CacheMissError(key)
        return default

    def getTtl(self, key: Hashable, default: Any = NONE) -> tuple[Any, float]:
        """Return ``(value, ttl_left)`` from the freshest tier; a stale entry if only that."""
        value, ttl = self._find(key)
        if value is _MISS:
            if default is NONE:
                raise CacheMissError(key)
            return default, -1.0
        return value, ttl

    def getTtlMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> Iterator[tuple[Hashable, tuple[Any, float]]]:
        """Batch lookup: each tier is asked only for the keys the tiers above it missed."""
        keys = list(keys)
        answer, hits = _fall_through_multi(self.clients, keys, default, self._promote)
        self._hits += hits
        self._misses += len(answer) - hits
        yield from answer

    def contains(self, key: Hashable, ttl: float | None = None) -> bool:
        """True if any tier has a live entry (with more than ``ttl`` left, if given)."""
        return any(client.contains(key, ttl) for client in self.clients)

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Write to every tier."""
        check_ttl(ttl)
        for client in self.clients:
            client.put(key, value, ttl)
        self._sets += 1

    def putMulti(self, items: Iterable[tuple[Hashable, Any]] | dict, ttl: float) -> None:
        """Write many pairs to every tier, in batches where a tier supports them."""
        check_ttl(ttl)
        items = list(items.items() if isinstance(items, dict) else items)
        for client in self.clients:
            client.putMulti(items, ttl)
        self._sets += len(items)

    def add(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Add in the last tier; when it succeeds, copy the value to the tiers above."""
        check_ttl(ttl)
        *upper, last = self.clients
        if not last.add(key, value, ttl):
            return False
        for client in upper:
            client.put(key, value, ttl)
        self._sets += 1
        return True

    def delete(self, key: Hashable) -> None:
        """Delete from every tier (the last first, so a reader cannot re-promote it)."""
        for client in reversed(self.clients):
            client.delete(key)

    def renew(self, key: Hashable, ttl: float) -> bool:
        """Renew in every tier; True if any tier held the entry."""
        check_ttl(ttl)
        return any([client.renew(key, ttl) for client in self.clients])

    def expire(self, key: Hashable) -> None:
        """Mark stale in every tier."""
        for client in reversed(self.clients):
            client.expire(key)

    def clear(self) -> None:
        """Clear every tier."""
        for client in reversed(self.clients):
            client.clear()

    def purge(self, timeout: float = 0) -> None:
        """Purge every tier."""
        for client in self.clients:
            client.purge(timeout)

    def wait(self, key: Hashable, timeout: float | None = None) -> None:
        """Wait for pending background writes of ``key`` in every tier."""
        for client in self.clients:
            client.wait(key, timeout)

    def close(self) -> None:
        """Close every tier."""
        for client in self.clients:
            client.close()

    @property
    def capacity(self) -> int:
        """Capacity of the last (largest, inclusive) tier."""
        return self.clients[-1].capacity

    @property
    def usage(self) -> int:
        """Usage of the last tier."""
        return self.clients[-1].usage

    @property
    def stats(self) -> CacheStats:
        """Hits, misses and sets as seen through the tiers; evictions and errors summed."""
        total = sum((client.stats for client in self.clients), CacheStats())
        return CacheStats(self._hits, self._misses, self._sets, total.evictions, total.errors)
