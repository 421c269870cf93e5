"""Consistent hashing: a ketama-style ring of virtual nodes.

Every node owns ``points`` positions on a 32-bit circle, derived from an MD5 of its name, so
the layout is the same in every process and every Python run (``hash()`` is salted per
process and would not do). A key belongs to the first node point at or after the key's own
hash. Adding or removing one of N nodes therefore moves only the keys in the arcs that node
gains or loses: about 1/N of them.

Rings are immutable; :meth:`HashRing.with_nodes` builds a new one, so a client can swap its
ring with one assignment while in-flight lookups keep using the old one.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["HashRing", "key_hash"]

N = TypeVar("N", bound=Hashable)

_DEFAULT_POINTS = 160


try:
    # CPython's own MD5 is about twice as fast as OpenSSL's for short keys (same digests).
    from _md5 import md5 as _md5_new  # type: ignore[import-not-found]  # no typeshed stub
except ImportError:  # pragma: no cover - builds without it

    def _md5_new(data: bytes) -> Any:
        return hashlib.md5(data, usedforsecurity=False)


def _md5(data: bytes) -> bytes:
    digest: bytes = _md5_new(data).digest()
    return digest


def key_hash(key: bytes) -> int:
    """The 32-bit ring position of ``key`` (first four bytes of its MD5, little endian)."""
    return int.from_bytes(_md5_new(key).digest()[:4], "little")


class HashRing(Generic[N]):
    """An immutable consistent-hash ring mapping byte keys to nodes.

    ``nodes`` is an iterable of node objects, or a mapping of node to weight (a positive
    number; a node of weight 2 owns twice the points of a node of weight 1). Each node is
    named on the ring by ``str(node)``, so two rings built from equal node names agree.
    """

    __slots__ = ("_nodes", "_owners", "_points", "points_per_node")

    def __init__(
        self, nodes: Iterable[N] | Mapping[N, float] = (), *, points_per_node: int = _DEFAULT_POINTS
    ) -> None:
        if isinstance(points_per_node, bool) or not isinstance(points_per_node, int):
            raise TypeError(f"points_per_node must be an int, got {points_per_node!r}")
        if points_per_node < 1:
            raise ValueError(f"points_per_node must be >= 1, got {points_per_node!r}")
        self.points_per_node = points_per_node
        weights = dict(nodes) if isinstance(nodes, Mapping) else dict.fromkeys(nodes, 1.0)
        for node, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
                raise ValueError(f"weight of node {node!r} must be a positive number: {weight!r}")
        self._nodes: dict[N, float] = weights
        positions: dict[int, N] = {}
        for node, weight in weights.items():
            name = str(node).encode()
            count = max(1, round(points_per_node * weight))
            # One MD5 yields four 32-bit points, as in ketama.
            for i in range((count + 3) // 4):
                digest = _md5(b"%s-%d" % (name, i))
                for j in range(4):
                    if i * 4 + j >= count:
                        break
                    point = int.from_bytes(digest[j * 4 : j * 4 + 4], "little")
                    # Collisions are astronomically rare; resolve them deterministically.
                    other = positions.get(point)
                    if other is None or str(other) > str(node):
                        positions[point] = node
        ordered = sorted(positions)
        self._points: list[int] = ordered
        self._owners: list[N] = [positions[p] for p in ordered]

    @property
    def nodes(self) -> list[N]:
        """The nodes on the ring, in insertion order."""
        return list(self._nodes)

    @property
    def weights(self) -> dict[N, float]:
        """Node to weight."""
        return dict(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def __bool__(self) -> bool:
        return bool(self._nodes)

    def get_node(self, key: bytes) -> N:
        """The node owning ``key``; ``LookupError`` on an empty ring."""
        points = self._points
        if len(self._nodes) < 2:
            if not points:
                raise LookupError("the hash ring has no nodes")
            return self._owners[0]
        i = bisect.bisect_left(points, int.from_bytes(_md5_new(key).digest()[:4], "little"))
        return self._owners[i if i < len(points) else 0]

    def with_nodes(self, nodes: Iterable[N] | Mapping[N, float]) -> HashRing[N]:
        """A new ring over ``nodes`` with this ring's settings."""
        return HashRing(nodes, points_per_node=self.points_per_node)

    def __repr__(self) -> str:
        return f"<HashRing nodes={len(self._nodes)} points={len(self._points)}>"
