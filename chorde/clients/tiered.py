"""Inclusive multi-level caches: a small fast tier in front of bigger, slower ones."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

from chorde.clients.base import BaseCacheClient, CacheStats, check_ttl
from chorde.clients.steps import Steps, arun, run
from chorde.errors import CacheMissError, ConfigurationError
from chorde.leases import HIT, LeaseRead, offered
from chorde.sentinel import NONE

__all__ = ["TieredInclusiveClient"]

_MISS: Any = object()

#: ``promote(i, hits)`` copies the live ``(key, value, ttl)`` hits of tier ``i`` above it.
_Promote = Callable[[int, list[tuple[Hashable, Any, float]]], None]
#: The same, as steps (see :mod:`chorde.clients.steps`).
_PromoteSteps = Callable[[int, list[tuple[Hashable, Any, float]]], Steps[None]]

Found = tuple[Any, float]
#: chorde 1.x's ``promote_callback(key, value, ttl)``: told of each promoted entry.
_Promoted = Callable[[Hashable, Any, float], Any]


def _fall_through_multi_steps(
    tiers: Sequence[BaseCacheClient],
    keys: list[Hashable],
    default: Any,
    promote: _PromoteSteps,
    ttl_skip: float = 0.0,
) -> Steps[tuple[list[tuple[Hashable, Found]], int]]:
    """Look ``keys`` up through ``tiers``, each asked only for the keys the ones above missed.

    A live hit (more than ``ttl_skip`` seconds left) is promoted into the tiers above its
    own with ``promote``; otherwise the freshest entry found wins.

    Returns the ``(key, (value, ttl))`` answer of every key (misses give ``(default, -1.0)``)
    and how many of them are live hits.
    """
    found: dict[Hashable, Found] = {}
    remaining = list(dict.fromkeys(keys))
    for i, tier in enumerate(tiers):
        if not remaining:
            break
        missing = []
        live: list[tuple[Hashable, Any, float]] = []
        for key, (value, ttl) in (yield (tier, "getTtlMulti", (remaining, _MISS))):
            if value is not _MISS and ttl > ttl_skip:
                found[key] = (value, ttl)
                live.append((key, value, ttl))
                continue
            if value is not _MISS and (key not in found or ttl > found[key][1]):
                found[key] = (value, ttl)
            missing.append(key)
        if i and live:
            yield from promote(i, live)
        remaining = missing
    answer = [(key, found.get(key, (default, -1.0))) for key in keys]
    return answer, sum(1 for _, (_, ttl) in answer if ttl > ttl_skip)


def _fall_through_multi(
    tiers: Sequence[BaseCacheClient], keys: list[Hashable], default: Any, promote: _Promote
) -> tuple[list[tuple[Hashable, Found]], int]:
    """:func:`_fall_through_multi_steps` with blocking calls and a plain ``promote``.

    Shared with the coherent client, whose ``promote`` undoes a promotion that an
    invalidation overtook.
    """

    def promote_steps(i: int, hits: list[tuple[Hashable, Any, float]]) -> Steps[None]:
        promote(i, hits)
        return
        yield  # a generator that makes no call

    return run(_fall_through_multi_steps(tiers, keys, default, promote_steps))


def _answer(key: Hashable, found: Found, default: Any) -> Found:
    if found[0] is _MISS:
        if default is NONE:
            raise CacheMissError(key)
        return default, -1.0
    return found


def _live(key: Hashable, found: Found, default: Any) -> Any:
    if found[1] > 0:
        return found[0]
    if default is NONE:
        raise CacheMissError(key)
    return default


class TieredInclusiveClient(BaseCacheClient):
    """Tiers of clients, first is fastest: ``TieredInclusiveClient(l1, l2, ...)``.

    Reads try each tier in order; a live hit in a lower tier is copied into the tiers above
    it with the ttl it has left (inclusive: upper tiers hold copies, not moved entries).
    Writes, deletes, renewals and expirations go to every tier. ``add`` is decided by the
    last tier, the most authoritative (usually the shared one). ``capacity`` and ``usage``
    are those of the last tier, which holds every entry the others hold.
    """

    def __init__(self, *clients: BaseCacheClient, **legacy: Any) -> None:
        if legacy:  # chorde 1.x's ttl_fractions: refused, naming what replaced it
            from chorde import _legacy

            _legacy.options("TieredInclusiveClient", legacy)
        if not clients:
            raise ConfigurationError("TieredInclusiveClient needs at least one client")
        for i, client in enumerate(clients):
            if not isinstance(client, BaseCacheClient):
                raise ConfigurationError(
                    f"tier {i} is {client!r}, not a cache client (BaseCacheClient)"
                )
        self.clients: tuple[BaseCacheClient, ...] = clients
        # Blocking calls may block (a network tier); the awaitable ones never do: they
        # await each tier's own awaitables.
        self.blocking = any(c.blocking for c in clients)
        self.is_async = any(c.is_async for c in clients)
        self._hits = 0
        self._misses = 0
        self._sets = 0

    # ---- the operations, written once (steps), run blocking or awaited ---------------

    def _promote(self, i: int, hits: list[tuple[Hashable, Any, float]]) -> Steps[None]:
        for upper in self.clients[:i]:
            for key, value, ttl in hits:
                yield (upper, "put", (key, value, ttl))

    def _find(
        self,
        key: Hashable,
        first: Found,
        ttl_skip: float = 0.0,
        promote_callback: _Promoted | None = None,
    ) -> Steps[Found]:
        """The freshest ``(value, ttl)`` below the first tier, whose answer was ``first``:
        the first with more than ``ttl_skip`` seconds left, promoted, else the freshest."""
        stale = first if first[0] is not _MISS else None
        clients = self.clients
        for i in range(1, len(clients)):
            value, ttl = yield (clients[i], "getTtl", (key, _MISS))
            if value is _MISS:
                continue
            if ttl > ttl_skip:
                for upper in clients[:i]:
                    yield (upper, "put", (key, value, ttl))
                if promote_callback is not None:
                    promote_callback(key, value, ttl)
                self._hits += 1
                return value, ttl
            if stale is None or ttl > stale[1]:
                stale = (value, ttl)
        self._misses += 1
        return stale if stale is not None else (_MISS, -1.0)

    def _multi(
        self,
        keys: Iterable[Hashable],
        default: Any,
        ttl_skip: float = 0.0,
        promote_callback: _Promoted | None = None,
    ) -> Steps[list[tuple[Hashable, Found]]]:
        promote = self._promote
        if promote_callback is not None:

            def promote(i: int, hits: list[tuple[Hashable, Any, float]]) -> Steps[None]:
                yield from self._promote(i, hits)
                for key, value, ttl in hits:
                    promote_callback(key, value, ttl)

        answer, hits = yield from _fall_through_multi_steps(
            self.clients, list(keys), default, promote, ttl_skip
        )
        self._hits += hits
        self._misses += len(answer) - hits
        return answer

    def _contains(self, key: Hashable, ttl: float | None) -> Steps[bool]:
        for client in self.clients:
            if (yield (client, "contains", (key, ttl))):
                return True
        return False

    def _each(self, name: str, *args: Any, reverse: bool = False) -> Steps[list[Any]]:
        """Call ``name(*args)`` on every tier (the last first when ``reverse``)."""
        clients = reversed(self.clients) if reverse else self.clients
        results = []
        for client in clients:
            results.append((yield (client, name, args)))
        return results

    def _put(self, key: Hashable, value: Any, ttl: float) -> Steps[None]:
        check_ttl(ttl)
        yield from self._each("put", key, value, ttl)
        self._sets += 1

    def _put_multi(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> Steps[list[Hashable]]:
        check_ttl(ttl)
        pairs = list(items.items() if isinstance(items, dict) else items)
        failed = (yield from self._each("putMulti", pairs, ttl))[-1] or []
        self._sets += len(pairs) - len(failed)
        return list(failed)  # the last tier's: the one every other tier copies

    def _add(self, key: Hashable, value: Any, ttl: float) -> Steps[bool]:
        check_ttl(ttl)
        *upper, last = self.clients
        if not (yield (last, "add", (key, value, ttl))):
            return False
        for client in upper:
            yield (client, "put", (key, value, ttl))
        self._sets += 1
        return True

    def _update(self, key: Hashable, fn: Callable[[Any], Any], ttl: float | None) -> Steps[Found]:
        """Update in the last tier (the authoritative one), then copy the result above."""
        *upper, last = self.clients
        new, left = yield (last, "updateTtl", (key, fn, ttl))
        for client in upper:
            if left > 0:
                yield (client, "put", (key, new, left))
            else:
                yield (client, "delete", (key,))
        return new, left

    def _renew(self, key: Hashable, ttl: float) -> Steps[bool]:
        check_ttl(ttl)
        return any((yield from self._each("renew", key, ttl)))

    # ---- blocking ------------------------------------------------------------------------

    def getTtl(
        self,
        key: Hashable,
        default: Any = NONE,
        *,
        ttl_skip: float = 0.0,
        promote_callback: _Promoted | None = None,
    ) -> Found:
        """Return ``(value, ttl_left)`` from the freshest tier; a stale entry if only that.

        chorde 1.x's keywords: ``ttl_skip`` passes over entries with that many seconds
        left or fewer to the tiers below (the freshest is returned if none has more);
        ``promote_callback(key, value, ttl)`` is told of an entry copied into upper tiers.
        """
        found = self.clients[0].getTtl(key, _MISS)  # the L1 hit: no generator
        if found[1] > ttl_skip:
            self._hits += 1
            return found
        return _answer(key, run(self._find(key, found, ttl_skip, promote_callback)), default)

    def get(
        self,
        key: Hashable,
        default: Any = NONE,
        *,
        ttl_skip: float = 0.0,
        promote_callback: _Promoted | None = None,
    ) -> Any:
        """Return the live value from the first tier that has it (1.x's keywords: see
        :meth:`getTtl`)."""
        found = self.clients[0].getTtl(key, _MISS)
        if found[1] > ttl_skip:
            self._hits += 1
            return found[0]
        return _live(key, run(self._find(key, found, ttl_skip, promote_callback)), default)

    def getTtlMulti(
        self,
        keys: Iterable[Hashable],
        default: Any = NONE,
        *,
        ttl_skip: float = 0.0,
        promote_callback: _Promoted | None = None,
    ) -> Iterator[tuple[Hashable, Found]]:
        """Batch lookup: each tier is asked only for the keys the tiers above it missed
        (1.x's keywords: see :meth:`getTtl`)."""
        yield from run(self._multi(keys, default, ttl_skip, promote_callback))

    def getMulti(
        self,
        keys: Iterable[Hashable],
        default: Any = NONE,
        *,
        ttl_skip: float = 0.0,
        promote_callback: _Promoted | None = None,
    ) -> Iterator[tuple[Hashable, Any]]:
        """Batch :meth:`get`: ``(key, value)`` pairs, ``default`` for a miss (1.x's
        keywords: see :meth:`getTtl`; an entry with ``ttl_skip`` seconds left or fewer is
        a miss here, as in 1.x)."""
        answer = run(self._multi(keys, NONE, ttl_skip, promote_callback))
        for key, (value, ttl) in answer:
            yield key, value if ttl > max(ttl_skip, 0.0) else default

    def contains(self, key: Hashable, ttl: float | None = None) -> bool:
        """True if any tier has a live entry (with more than ``ttl`` left, if given)."""
        return run(self._contains(key, ttl))

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Write to every tier."""
        run(self._put(key, value, ttl))

    def putMulti(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> list[Hashable]:
        """Write many pairs to every tier, in batches where a tier supports them; return the
        keys the last tier could not store."""
        return run(self._put_multi(items, ttl))

    def add(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Add in the last tier; when it succeeds, copy the value to the tiers above."""
        return run(self._add(key, value, ttl))

    def delete(self, key: Hashable) -> None:
        """Delete from every tier (the last first, so a reader cannot re-promote it)."""
        run(self._each("delete", key, reverse=True))

    def updateTtl(self, key: Hashable, fn: Callable[[Any], Any], ttl: float | None = None) -> Found:
        """Update atomically in the last tier, then copy the new value into the others."""
        return run(self._update(key, fn, ttl))

    def renew(self, key: Hashable, ttl: float) -> bool:
        """Renew in every tier; True if any tier held the entry."""
        return run(self._renew(key, ttl))

    def expire(self, key: Hashable) -> None:
        """Mark stale in every tier."""
        run(self._each("expire", key, reverse=True))

    def clear(self) -> None:
        """Clear every tier."""
        run(self._each("clear", reverse=True))

    def purge(self, timeout: float = 0) -> None:
        """Purge every tier."""
        run(self._each("purge", timeout))

    def wait(self, key: Hashable, timeout: float | None = None) -> None:
        """Wait for pending background writes of ``key`` in every tier."""
        for client in self.clients:
            client.wait(key, timeout)

    def close(self) -> None:
        """Close every tier."""
        run(self._each("close"))

    # ---- awaitable: each tier's own awaitables, never an executor of ours ----------------

    async def agetTtl(
        self,
        key: Hashable,
        default: Any = NONE,
        *,
        ttl_skip: float = 0.0,
        promote_callback: _Promoted | None = None,
    ) -> Found:
        """Awaitable :meth:`getTtl`."""
        found = await self.clients[0].agetTtl(key, _MISS)
        if found[1] > ttl_skip:
            self._hits += 1
            return found
        found = await arun(self._find(key, found, ttl_skip, promote_callback))
        return _answer(key, found, default)

    async def aget(
        self,
        key: Hashable,
        default: Any = NONE,
        *,
        ttl_skip: float = 0.0,
        promote_callback: _Promoted | None = None,
    ) -> Any:
        """Awaitable :meth:`get`."""
        found = await self.clients[0].agetTtl(key, _MISS)
        if found[1] > ttl_skip:
            self._hits += 1
            return found[0]
        found = await arun(self._find(key, found, ttl_skip, promote_callback))
        return _live(key, found, default)

    async def agetTtlMulti(
        self,
        keys: Iterable[Hashable],
        default: Any = NONE,
        *,
        ttl_skip: float = 0.0,
        promote_callback: _Promoted | None = None,
    ) -> list[tuple[Hashable, Found]]:
        """Awaitable :meth:`getTtlMulti`."""
        return await arun(self._multi(keys, default, ttl_skip, promote_callback))

    async def agetMulti(
        self,
        keys: Iterable[Hashable],
        default: Any = NONE,
        *,
        ttl_skip: float = 0.0,
        promote_callback: _Promoted | None = None,
    ) -> list[tuple[Hashable, Any]]:
        """Awaitable :meth:`getMulti`."""
        answer = await arun(self._multi(keys, NONE, ttl_skip, promote_callback))
        live = max(ttl_skip, 0.0)
        return [(key, value if ttl > live else default) for key, (value, ttl) in answer]

    async def acontains(self, key: Hashable, ttl: float | None = None) -> bool:
        """Awaitable :meth:`contains`."""
        return await arun(self._contains(key, ttl))

    async def aput(self, key: Hashable, value: Any, ttl: float) -> None:
        """Awaitable :meth:`put`."""
        await arun(self._put(key, value, ttl))

    async def aputMulti(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> list[Hashable]:
        """Awaitable :meth:`putMulti`."""
        return await arun(self._put_multi(items, ttl))

    async def aadd(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Awaitable :meth:`add`."""
        return await arun(self._add(key, value, ttl))

    async def adelete(self, key: Hashable) -> None:
        """Awaitable :meth:`delete`."""
        await arun(self._each("delete", key, reverse=True))

    async def aupdateTtl(
        self, key: Hashable, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> Found:
        """Awaitable :meth:`updateTtl`."""
        return await arun(self._update(key, fn, ttl))

    async def arenew(self, key: Hashable, ttl: float) -> bool:
        """Awaitable :meth:`renew`."""
        return await arun(self._renew(key, ttl))

    async def aexpire(self, key: Hashable) -> None:
        """Awaitable :meth:`expire`."""
        await arun(self._each("expire", key, reverse=True))

    async def aclear(self) -> None:
        """Awaitable :meth:`clear`."""
        await arun(self._each("clear", reverse=True))

    async def apurge(self, timeout: float = 0) -> None:
        """Awaitable :meth:`purge`."""
        await arun(self._each("purge", timeout))

    async def aclose(self) -> None:
        """Awaitable :meth:`close`."""
        await arun(self._each("close"))

    # ---- leases (chorde.leases): the last tier's, a hit copied above ----------------------

    @property
    def lease_ttl(self) -> float:
        """The last tier's lease ttl; 0 when it hands out no leases."""
        last = self.clients[-1]
        return float(last.lease_ttl) if offered(last) else 0.0  # type: ignore[attr-defined]

    def _lease_read(self, key: Hashable, accept: Callable[[Any, float], bool]) -> Steps[LeaseRead]:
        *upper, last = self.clients
        read: LeaseRead = yield (last, "lease_read", (key, accept))
        if read.state == HIT and read.ttl > 0:
            for client in upper:
                yield (client, "put", (key, read.value, read.ttl))
        return read

    def _lease_put(self, key: Hashable, value: Any, ttl: float, token: Any) -> Steps[None]:
        check_ttl(ttl)
        *upper, last = self.clients
        yield (last, "lease_put", (key, value, ttl, token))
        for client in upper:
            yield (client, "put", (key, value, ttl))
        self._sets += 1

    def lease_read(self, key: Hashable, accept: Callable[[Any, float], bool]) -> LeaseRead:
        """The last tier's lease read; a hit is copied into the tiers above."""
        return run(self._lease_read(key, accept))

    async def alease_read(self, key: Hashable, accept: Callable[[Any, float], bool]) -> LeaseRead:
        """Awaitable :meth:`lease_read`."""
        return await arun(self._lease_read(key, accept))

    def lease_put(self, key: Hashable, value: Any, ttl: float, token: Any) -> None:
        """Store a leased computation's value: the last tier's lease ends, every tier has it."""
        run(self._lease_put(key, value, ttl, token))

    async def alease_put(self, key: Hashable, value: Any, ttl: float, token: Any) -> None:
        """Awaitable :meth:`lease_put`."""
        await arun(self._lease_put(key, value, ttl, token))

    def lease_release(self, key: Hashable, token: Any) -> None:
        """Give a lease of the last tier back."""
        self.clients[-1].lease_release(key, token)  # type: ignore[attr-defined]

    async def alease_release(self, key: Hashable, token: Any) -> None:
        """Awaitable :meth:`lease_release`."""
        await self.clients[-1].alease_release(key, token)  # type: ignore[attr-defined]

    # ---- sizes and counters ----------------------------------------------------------------

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
