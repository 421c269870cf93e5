"""A namespace over a shared client, cleared in O(1) by bumping a revision."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Literal, overload

from chorde.clients.base import BaseCacheClient, ClientWrapper, check_ttl
from chorde.clients.steps import Steps, arun, run
from chorde.errors import CacheMissError
from chorde.sentinel import NONE

__all__ = ["NamespaceWrapper"]

_MISS: Any = object()


def _new_revision() -> int:
    # Random, not a counter starting at 0: if the revision entry is ever evicted, a fresh
    # one must not resurrect entries written under an old revision.
    return random.getrandbits(62)


class NamespaceWrapper(ClientWrapper):
    """Keys of ``client`` prefixed by ``namespace`` and a revision number.

    ``clear()`` writes a new revision, so every entry of the namespace becomes unreachable at
    once, without scanning keys; the orphans age out of the underlying client by ttl or
    eviction. The revision lives in the underlying client, so processes sharing it share
    the namespace; each process re-reads it at most every ``revision_refresh`` seconds
    (0: on every operation, exact across processes at the cost of one more lookup).
    ``capacity``, ``usage``, ``stats`` and ``purge`` are the underlying client's, shared
    with its other namespaces.
    """

    def __init__(
        self,
        namespace: Hashable,
        client: BaseCacheClient,
        *,
        revision_refresh: float = 1.0,
        **legacy: Any,
    ) -> None:
        if legacy:  # chorde 1.x's revmark_ttl: refused, naming what replaced it
            from chorde import _legacy

            _legacy.options("NamespaceWrapper", legacy)
        super().__init__(client)
        try:
            hash(namespace)
        except TypeError:
            raise TypeError(f"namespace must be hashable, got {namespace!r}") from None
        self.namespace = namespace
        self.revision_refresh = check_ttl(revision_refresh, "revision_refresh")
        self._revision_key = (namespace, "\x00revision")
        self._revision: int | None = None
        self._checked = -math.inf

    # ---- the operations, written once (steps), run blocking or awaited ---------------

    def _revision_steps(self) -> Steps[int]:
        now = time.monotonic()
        revision = self._revision
        if revision is None or now - self._checked >= self.revision_refresh:
            client, key = self.client, self._revision_key
            revision = yield (client, "get", (key, None))
            if revision is None:
                revision = _new_revision()
                if not (yield (client, "add", (key, revision, math.inf))):
                    revision = yield (client, "get", (key, revision))
            self._revision = revision
            self._checked = now
        return revision

    @property
    def revision(self) -> int:
        """The namespace's current revision (read from the client when due)."""
        return run(self._revision_steps())

    @overload
    def _on(
        self, name: Literal["contains", "add", "renew"], key: Hashable, *args: Any
    ) -> Steps[bool]: ...
    @overload
    def _on(
        self, name: Literal["getTtl", "updateTtl"], key: Hashable, *args: Any
    ) -> Steps[tuple[Any, float]]: ...
    @overload
    def _on(self, name: str, key: Hashable, *args: Any) -> Steps[Any]: ...
    def _on(self, name: str, key: Hashable, *args: Any) -> Steps[Any]:
        """``client.name((namespace, revision, key), *args)``."""
        revision = yield from self._revision_steps()
        return (yield (self.client, name, ((self.namespace, revision, key), *args)))

    def _get_ttl(self, key: Hashable, default: Any) -> Steps[tuple[Any, float]]:
        value, ttl = yield from self._on("getTtl", key, _MISS)
        if value is _MISS:
            if default is NONE:
                raise CacheMissError(key)
            return default, -1.0
        return value, ttl

    def _get(self, key: Hashable, default: Any) -> Steps[Any]:
        value = yield from self._on("get", key, _MISS)
        if value is _MISS:
            if default is NONE:
                raise CacheMissError(key)
            return default
        return value

    def _multi(self, name: str, keys: Iterable[Hashable], default: Any) -> Steps[list[Any]]:
        """``getMulti``/``getTtlMulti`` through the client's own batch lookup."""
        keys = list(keys)
        revision = yield from self._revision_steps()
        inner = [(self.namespace, revision, key) for key in keys]
        got = yield (self.client, name, (inner, _MISS))
        answer = []
        for key, (_, found) in zip(keys, got, strict=True):
            if name == "getMulti":
                answer.append((key, default if found is _MISS else found))
            else:
                answer.append((key, (default, found[1]) if found[0] is _MISS else found))
        return answer

    def _put_multi(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> Steps[list[Hashable]]:
        pairs = items.items() if isinstance(items, dict) else items
        revision = yield from self._revision_steps()
        inner = [((self.namespace, revision, k), v) for k, v in pairs]
        failed = yield (self.client, "putMulti", (inner, ttl))
        return [key[2] for key in failed or ()]

    def _clear(self) -> Steps[None]:
        revision = _new_revision()
        yield (self.client, "put", (self._revision_key, revision, math.inf))
        self._revision = revision
        self._checked = time.monotonic()

    # ---- blocking ------------------------------------------------------------------------

    def getTtl(self, key: Hashable, default: Any = NONE) -> tuple[Any, float]:
        """Return ``(value, ttl_left)`` for ``key`` within the namespace."""
        return run(self._get_ttl(key, default))

    def get(self, key: Hashable, default: Any = NONE) -> Any:
        """Return the live value for ``key`` within the namespace."""
        return run(self._get(key, default))

    def getTtlMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> Iterator[tuple[Hashable, tuple[Any, float]]]:
        """Batch :meth:`getTtl` through the client's own batch lookup."""
        yield from run(self._multi("getTtlMulti", keys, default))

    def getMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> Iterator[tuple[Hashable, Any]]:
        """Batch :meth:`get` through the client's own batch lookup."""
        yield from run(self._multi("getMulti", keys, default))

    def contains(self, key: Hashable, ttl: float | None = None) -> bool:
        """True if ``key`` has a live entry in the namespace."""
        return run(self._on("contains", key, ttl))

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Store within the namespace."""
        run(self._on("put", key, value, ttl))

    def putMulti(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> list[Hashable]:
        """Store many pairs within the namespace; return the keys that could not be."""
        return run(self._put_multi(items, ttl))

    def add(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Add within the namespace."""
        return run(self._on("add", key, value, ttl))

    def delete(self, key: Hashable) -> None:
        """Delete within the namespace."""
        run(self._on("delete", key))

    def renew(self, key: Hashable, ttl: float) -> bool:
        """Renew within the namespace."""
        return run(self._on("renew", key, ttl))

    def updateTtl(
        self, key: Hashable, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """Update within the namespace, as atomically as the client does."""
        return run(self._on("updateTtl", key, fn, ttl))

    def expire(self, key: Hashable) -> None:
        """Mark stale within the namespace."""
        run(self._on("expire", key))

    def clear(self) -> None:
        """Invalidate the whole namespace in O(1) by writing a new revision."""
        run(self._clear())

    def wait(self, key: Hashable, timeout: float | None = None) -> None:
        """Wait for pending background writes of ``key``."""
        self.client.wait(self._key(key), timeout)

    def _key(self, key: Hashable) -> tuple[Hashable, int, Hashable]:
        return (self.namespace, self.revision, key)

    # ---- awaitable: the client's own awaitables ------------------------------------------

    async def agetTtl(self, key: Hashable, default: Any = NONE) -> tuple[Any, float]:
        """Awaitable :meth:`getTtl`."""
        return await arun(self._get_ttl(key, default))

    async def aget(self, key: Hashable, default: Any = NONE) -> Any:
        """Awaitable :meth:`get`."""
        return await arun(self._get(key, default))

    async def agetTtlMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> list[tuple[Hashable, tuple[Any, float]]]:
        """Awaitable :meth:`getTtlMulti`."""
        return await arun(self._multi("getTtlMulti", keys, default))

    async def agetMulti(self, keys: Iterable[Hashable], default: Any = NONE) -> list[Any]:
        """Awaitable :meth:`getMulti`."""
        return await arun(self._multi("getMulti", keys, default))

    async def acontains(self, key: Hashable, ttl: float | None = None) -> bool:
        """Awaitable :meth:`contains`."""
        return await arun(self._on("contains", key, ttl))

    async def aput(self, key: Hashable, value: Any, ttl: float) -> None:
        """Awaitable :meth:`put`."""
        await arun(self._on("put", key, value, ttl))

    async def aputMulti(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> list[Hashable]:
        """Awaitable :meth:`putMulti`."""
        return await arun(self._put_multi(items, ttl))

    async def aadd(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Awaitable :meth:`add`."""
        return await arun(self._on("add", key, value, ttl))

    async def adelete(self, key: Hashable) -> None:
        """Awaitable :meth:`delete`."""
        await arun(self._on("delete", key))

    async def arenew(self, key: Hashable, ttl: float) -> bool:
        """Awaitable :meth:`renew`."""
        return await arun(self._on("renew", key, ttl))

    async def aupdateTtl(
        self, key: Hashable, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """Awaitable :meth:`updateTtl`."""
        return await arun(self._on("updateTtl", key, fn, ttl))

    async def aexpire(self, key: Hashable) -> None:
        """Awaitable :meth:`expire`."""
        await arun(self._on("expire", key))

    async def aclear(self) -> None:
        """Awaitable :meth:`clear`."""
        await arun(self._clear())
