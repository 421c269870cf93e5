"""A client wrapper that keeps entries at most ``max_ttl`` seconds (an L1 before a shared tier)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any

from chorde.clients.base import BaseCacheClient, ClientWrapper, check_ttl
from chorde.sentinel import NONE

__all__ = ["CappedTtlClient"]


class CappedTtlClient(ClientWrapper):
    """Delegate to ``client``, shortening every ttl to at most ``max_ttl``.

    A process-local tier in front of a shared one cannot see writes made by other
    processes; capping its ttl bounds how long it may serve a value they replaced.
    """

    def __init__(self, client: BaseCacheClient, max_ttl: float) -> None:
        super().__init__(client)
        self.max_ttl = check_ttl(max_ttl, "max_ttl")

    def getTtl(self, key: Hashable, default: Any = NONE) -> tuple[Any, float]:
        """Delegated."""
        return self.client.getTtl(key, default)

    def get(self, key: Hashable, default: Any = NONE) -> Any:
        """Delegated."""
        return self.client.get(key, default)

    def getTtlMulti(self, keys: Iterable[Hashable], default: Any = NONE) -> Iterator[Any]:
        """Delegated."""
        return self.client.getTtlMulti(keys, default)

    def getMulti(self, keys: Iterable[Hashable], default: Any = NONE) -> Iterator[Any]:
        """Delegated."""
        return self.client.getMulti(keys, default)

    def contains(self, key: Hashable, ttl: float | None = None) -> bool:
        """Delegated."""
        return self.client.contains(key, ttl)

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Store with the ttl capped."""
        self.client.put(key, value, min(ttl, self.max_ttl))

    def putMulti(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> list[Hashable]:
        """Store many with the ttl capped."""
        return self.client.putMulti(items, min(ttl, self.max_ttl))

    def add(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Add with the ttl capped."""
        return self.client.add(key, value, min(ttl, self.max_ttl))

    def delete(self, key: Hashable) -> None:
        """Delegated."""
        self.client.delete(key)

    def renew(self, key: Hashable, ttl: float) -> bool:
        """Renew with the ttl capped."""
        return self.client.renew(key, min(ttl, self.max_ttl))

    def expire(self, key: Hashable) -> None:
        """Delegated."""
        self.client.expire(key)

    def clear(self) -> None:
        """Delegated."""
        self.client.clear()
