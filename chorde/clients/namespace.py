"""A namespace over a shared client, cleared in O(1) by bumping a revision."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

from chorde.clients.base import BaseCacheClient, ClientWrapper, check_ttl
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
        self, namespace: Hashable, client: BaseCacheClient, *, revision_refresh: float = 1.0
    ) -> None:
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

    @property
    def revision(self) -> int:
        """The namespace's current revision (read from the client when due)."""
        now = time.monotonic()
        revision = self._revision
        if revision is None or now - self._checked >= self.revision_refresh:
            revision = self.client.get(self._revision_key, None)
            if revision is None:
                revision = _new_revision()
                if not self.client.add(self._revision_key, revision, math.inf):
                    revision = self.client.get(self._revision_key, revision)
            self._revision = revision
            self._checked = now
        return revision

    def _key(self, key: Hashable) -> tuple[Hashable, int, Hashable]:
        return (self.namespace, self.revision, key)

    def getTtl(self, key: Hashable, default: Any = NONE) -> tuple[Any, float]:
        """Return ``(value, ttl_left)`` for ``key`` within the namespace."""
        value, ttl = self.client.getTtl(self._key(key), _MISS)
        if value is _MISS:
            if default is NONE:
                raise CacheMissError(key)
            return default, -1.0
        return value, ttl

    def get(self, key: Hashable, default: Any = NONE) -> Any:
        """Return the live value for ``key`` within the namespace."""
        value = self.client.get(self._key(key), _MISS)
        if value is _MISS:
            if default is NONE:
                raise CacheMissError(key)
            return default
        return value

    def getTtlMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> Iterator[tuple[Hashable, tuple[Any, float]]]:
        """Batch :meth:`getTtl` through the client's own batch lookup."""
        keys = list(keys)
        revision = self.revision
        inner = [(self.namespace, revision, key) for key in keys]
        for key, (_, (value, ttl)) in zip(keys, self.client.getTtlMulti(inner, _MISS), strict=True):
            yield key, (default, ttl) if value is _MISS else (value, ttl)

    def getMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> Iterator[tuple[Hashable, Any]]:
        """Batch :meth:`get` through the client's own batch lookup."""
        keys = list(keys)
        revision = self.revision
        inner = [(self.namespace, revision, key) for key in keys]
        for key, (_, value) in zip(keys, self.client.getMulti(inner, _MISS), strict=True):
            yield key, default if value is _MISS else value

    def contains(self, key: Hashable, ttl: float | None = None) -> bool:
        """True if ``key`` has a live entry in the namespace."""
        return self.client.contains(self._key(key), ttl)

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Store within the namespace."""
        self.client.put(self._key(key), value, ttl)

    def putMulti(self, items: Iterable[tuple[Hashable, Any]] | dict, ttl: float) -> None:
        """Store many pairs within the namespace."""
        if isinstance(items, dict):
            items = items.items()
        revision = self.revision
        self.client.putMulti([((self.namespace, revision, k), v) for k, v in items], ttl)

    def add(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Add within the namespace."""
        return self.client.add(self._key(key), value, ttl)

    def delete(self, key: Hashable) -> None:
        """Delete within the namespace."""
        self.client.delete(self._key(key))

    def renew(self, key: Hashable, ttl: float) -> bool:
        """Renew within the namespace."""
        return self.client.renew(self._key(key), ttl)

    def expire(self, key: Hashable) -> None:
        """Mark stale within the namespace."""
        self.client.expire(self._key(key))

    def clear(self) -> None:
        """Invalidate the whole namespace in O(1) by writing a new revision."""
        revision = _new_revision()
        self.client.put(self._revision_key, revision, math.inf)
        self._revision = revision
        self._checked = time.monotonic()

    def wait(self, key: Hashable, timeout: float | None = None) -> None:
        """Wait for pending background writes of ``key``."""
        self.client.wait(self._key(key), timeout)
