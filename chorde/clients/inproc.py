"""In-process cache clients: private to one process, thread-safe, no serialization.

Two stores hold the entries; :class:`InprocCacheClient` adds expiry and the client contract
on top of either:

* :class:`Cache`: an exact LRU. O(1) get, put and eviction; reads take no lock. Every read
  moves the entry to the young end; pass ``touch_on_read=False`` to skip that (reads get
  cheaper, eviction becomes insertion order). Two implementations, one per build, the same
  behaviour: :class:`OrderedLRU` (a C ``OrderedDict``, fastest in pure Python) and
  :class:`LinkedLRU` (a dict of linked nodes, fastest compiled: a read hashes its key once).
* :class:`CuckooCache`: an approximate LRU in a fixed table. Each key may live in one of four
  slots (two hash positions, two slots each), so lookups probe at most four slots, memory
  never grows, and eviction picks the least recently used of the candidates (after one
  cuckoo-style relocation attempt), not the global LRU. Reads take no lock.

Keys are used as they are (any hashable object, no encoding); an unhashable key raises
``TypeError`` naming it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from chorde.clients.base import (
    BaseCacheClient,
    CacheStats,
    check_capacity,
    check_ttl,
)
from chorde.errors import CacheMissError, ConfigurationError
from chorde.sentinel import NONE

try:
    import cython  # type: ignore[import-untyped]  # Cython ships no type information
except ImportError:  # pure Python, Cython not installed: cython.compiled is False
    from chorde import _cython_shim as cython

# True only in the compiled build (chorde._speedups), where ``_c_monotonic`` (declared in
# inproc.pxd) reads CLOCK_MONOTONIC, the clock of time.monotonic, without a Python call.
# Code under ``if cython.compiled:`` (a constant to Cython) is the compiled build's alone.
_COMPILED = cython.compiled

_MONOTONIC = time.monotonic

#: The compiled build's C clock, a C function declared in inproc.pxd (no Python binding: the
#: pure build never calls it, only code under ``_COMPILED`` does).
_c_monotonic: Callable[[], float]

__all__ = [
    "STORES",
    "BaseStore",
    "Cache",
    "CuckooCache",
    "InprocCacheClient",
    "LRUCache",
    "LinkedLRU",
    "OrderedLRU",
]

#: Attempts of OrderedLRU.items() at listing the recency order under concurrent reads.
_ORDER_ATTEMPTS = 20

#: An entry as the stores hold it: ``(value, expires)``, ``expires`` on the client's clock.
Entry = tuple[Any, float]


def _bad_key(key: Any) -> TypeError:
    return TypeError(f"cache keys must be hashable, got {key!r} of type {type(key).__name__}")


class BaseStore:
    """What :class:`InprocCacheClient` needs of a store. Every method is thread-safe.

    ``get`` raises ``KeyError`` for a missing key and counts as a use for eviction; ``peek``
    does not. ``now`` arguments are on the client's clock, for stores that prefer
    evicting expired entries.
    """

    capacity: int
    evictions: int
    #: Returns the entry for a key or raises ``KeyError``; may itself mark the key used.
    lookup: Callable[[Hashable], Entry]
    #: Marks a key used after a successful ``lookup``; None when ``lookup`` already does.
    #: It may race with writers and then raise ``KeyError`` or ``RuntimeError``.
    touch: Callable[[Hashable], Any] | None = None

    def get(self, key: Hashable) -> Entry:
        """Return the entry for ``key`` and mark it used; raise ``KeyError`` if absent."""
        entry = self.lookup(key)
        if self.touch is not None:
            try:  # noqa: SIM105 (hot path)
                self.touch(key)
            except (KeyError, RuntimeError):
                pass
        return entry

    def __getitem__(self, key: Hashable) -> Entry:
        """``lookup(key)``: the client reads every store by subscripting, as it does the
        exact-LRU store's dict."""
        return self.lookup(key)

    def peek(self, key: Hashable) -> Entry:
        """Return the entry for ``key`` without marking it used."""
        raise NotImplementedError

    def set(self, key: Hashable, entry: Entry, now: float) -> None:
        """Store ``entry`` under ``key``, evicting if full."""
        raise NotImplementedError

    def add(self, key: Hashable, entry: Entry, now: float) -> bool:
        """Store only if ``key`` is absent or expired at ``now``; return whether stored."""
        raise NotImplementedError

    def set_expiry(self, key: Hashable, expires: float, direction: int = 0) -> bool:
        """Change the expiry of an existing entry (only to a sooner one when ``direction`` is
        -1, only to a later one when it is 1); return whether it existed."""
        raise NotImplementedError

    def pop(self, key: Hashable) -> None:
        """Remove ``key`` if present."""
        raise NotImplementedError

    def clear(self) -> None:
        """Remove everything."""
        raise NotImplementedError

    def purge(self, cutoff: float) -> int:
        """Remove entries that expired before ``cutoff``; return how many."""
        raise NotImplementedError

    def items(self) -> list[tuple[Hashable, Entry]]:
        """A snapshot of the entries."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class OrderedLRU(BaseStore):
    """Exact LRU store over an ``OrderedDict``: the :class:`Cache` of the pure-Python build.
    See the module docstring."""

    __slots__ = ("_data", "_lock", "_move", "capacity", "evictions", "lookup", "touch")

    def __init__(self, size: int, touch_on_read: bool = True) -> None:
        self.capacity = check_capacity(size)
        self.evictions = 0
        self._data: OrderedDict[Hashable, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._move = self._data.move_to_end
        self.lookup = self._data.__getitem__
        # Reads move the key without the lock: each OrderedDict method is atomic under the
        # GIL, and the C implementation detects (raises on) mutation during a key's own
        # Python __eq__/__hash__. The worst a race does is skip one LRU touch.
        self.touch = self._move if touch_on_read else None

    def peek(self, key: Hashable) -> Entry:
        return self._data[key]

    def set(self, key: Hashable, entry: Entry, now: float) -> None:
        with self._lock:
            self._set_locked(key, entry)

    def add(self, key: Hashable, entry: Entry, now: float) -> bool:
        with self._lock:
            old = self._data.get(key)
            if old is not None and old[1] > now:
                return False
            self._set_locked(key, entry)
            return True

    def _set_locked(self, key: Hashable, entry: Entry) -> None:
        # InprocCacheClient.put inlines this (its hot path): keep the two alike.
        data = self._data
        if key in data:
            data[key] = entry
            self._move(key)
        else:  # a new key goes to the young end by itself
            # Evict before inserting, so a concurrent reader of len() never sees capacity + 1.
            if len(data) >= self.capacity:
                data.popitem(last=False)
                self.evictions += 1
            data[key] = entry

    def set_expiry(self, key: Hashable, expires: float, direction: int = 0) -> bool:
        with self._lock:
            old = self._data.get(key)
            if old is None:
                return False
            if _moves(old[1], expires, direction):
                self._data[key] = (old[0], expires)
            return True

    def pop(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def purge(self, cutoff: float) -> int:
        with self._lock:
            data = self._data
            # The dict's own (insertion) order: listing it hashes nothing, so no Python code
            # runs and no lock-free reader can reorder the dict under the listing.
            dead = [k for k in list(dict.keys(data)) if data[k][1] < cutoff]
            for k in dead:
                del data[k]
        return len(dead)

    def items(self) -> list[tuple[Hashable, Entry]]:
        """A snapshot of the entries, least recently used first."""
        with self._lock:
            data = self._data
            return [(k, data[k]) for k in self._lru_order()]

    def _lru_order(self) -> list[Hashable]:
        # Walking the recency order looks every key up again, and a key's __hash__ may be
        # Python code, letting a lock-free reader reorder the dict mid-walk: OrderedDict
        # then raises RuntimeError. Retry; if readers keep winning, give insertion order.
        for _ in range(_ORDER_ATTEMPTS):
            try:
                return list(self._data)
            except RuntimeError:
                pass
        return list(dict.keys(self._data))

    def __len__(self) -> int:
        return len(self._data)


# Slots: an entry's place in its store's chunks and link array (see _Links), and markers.
_CHUNK_BITS = 12
_CHUNK = 1 << _CHUNK_BITS  # slots per chunk
_CHUNK_MASK = _CHUNK - 1
_ROOT = -1  # the end of the recency list (and of the free list)
_UNLINKED = -2  # the slot of a node dropped (a reader that still holds it reads a miss)
#: Slots of a store, at most: links are C ints in the compiled build.
_MAX_SLOTS = 2**30


class _Node:
    """One entry of :class:`LinkedLRU`: its slot (``_UNLINKED`` once dropped) and expiry.
    Its key, value and links are its store's, at its slot: compiled, a node holds no
    Python reference, so it is a 32-byte object the garbage collector need not track."""

    __slots__ = ("expires", "slot")

    slot: int
    expires: float


def _new_node(slot: int, expires: float) -> _Node:
    node = _Node.__new__(_Node)
    node.slot = slot
    node.expires = expires
    return node


def _moves(old: float, new: float, direction: int) -> bool:
    """Whether an expiry goes from ``old`` to ``new`` (``direction``: 0 any way, -1 only
    sooner, 1 only later)."""
    return direction == 0 or (new < old if direction < 0 else new > old)


def _subkey(key: Any) -> Hashable:
    """The key within its namespace's table of a routed key ``(namespace, *rest)``: the
    single rest element itself unless it is a tuple, else ``rest`` as a tuple. Two unequal
    keys never get equal subkeys: a bare element is never a tuple, and ``rest`` tuples are
    equal only when the keys are."""
    if len(key) == 2:
        sub: Hashable = key[1]
        if not isinstance(sub, tuple):
            return sub
    rest: tuple[Hashable, ...] = key[1:]
    return rest


def _rest_key(rest: tuple[Hashable, ...]) -> Hashable:
    """:func:`_subkey` of ``(namespace, *rest)``, from ``rest`` (no key tuple to build)."""
    if len(rest) == 1:
        sub = rest[0]
        if not isinstance(sub, tuple):
            return sub
    return rest


class _Links:
    """The state of :class:`LinkedLRU`: tables of nodes, the slots holding their keys,
    values and links, and one recency list through the slots (``head`` the most recently
    used, ``tail`` the least). Writers hold ``lock``.

    Memory: an entry is a dict slot (key -> node), a node (32 bytes compiled: a C int and a
    C double, no Python reference, so not tracked by the garbage collector), two items of a
    chunk list (key and value) and two C ints of links (prev, next): about 98 bytes at a
    million entries, where ``lru.LRU`` (no expiry) takes 90. Keys and values are in lists,
    which the collector sees, so a value that refers back to its cache still makes a
    collectable cycle. Chunks are added one at a time and the link array doubles, up to
    the capacity; freed slots (a free list through the links) are reused.

    Keys live in the main table ``nodes``, except those routed to a namespace's table:
    once :meth:`space` has made a table for ``ns``, every key ``(ns, *rest)`` (a tuple of
    two or more whose head equals ``ns``) is held there under :func:`_subkey`, so that a
    cached function can look up its bare arguments, as ``functools.lru_cache`` does (the
    table of a slot's entry is then noted per slot, ``slot_space``). The routing is
    invisible to the API: the same keys find the same entries, and all the tables share the
    list and the capacity.

    Compiled (``inproc.pxd`` makes this a C type), a read is one dict lookup and a relink
    of C ints that runs no Python code: the GIL makes it atomic, so reads take no lock.
    Pure Python has no such guarantee, so there reads relink under the lock.
    """

    def __init__(self, capacity: int, touch_on_read: bool) -> None:
        self.nodes: dict[Hashable, _Node] = {}
        self.spaces: dict[str, dict[Hashable, _Node]] = {}
        self.space_tables: list[dict[Hashable, _Node]] = []  # by number
        # Chunks of _CHUNK slots, each slot two items: key, value (None when free).
        self.chunks: list[list[Any]] = []
        # prev and next of each slot (compiled: a C array), and the table number of each
        # slot's entry (-1: the main table; made with the first namespace table).
        if not cython.compiled:
            self.links: Any = []
            self.slot_space: Any = []
        self.slots = 0  # slots the link array has room for
        self.space_room = 0  # slots slot_space has room for
        self.space_ids: dict[int, int] = {}  # id(namespace table) -> its number
        self.top = 0  # slots ever used
        self.free = _ROOT  # the first free slot, the others chained by their next link
        self.head = _ROOT
        self.tail = _ROOT
        self.size = 0  # entries in all the tables
        self.capacity = capacity
        self.touch_on_read = touch_on_read
        self.evictions = 0
        # The write lock, reentrant: a key's Python __hash__ or __eq__, run by a writer
        # (or by a pure Python reader), may use this cache from the same thread. Compiled,
        # a C lock taken without a Python call (a wait releases the GIL).
        if cython.compiled:
            _new_lock(self)  # type: ignore[name-defined]  # noqa: F821 (inproc.pxd)
        else:
            self.lock = threading.RLock()

    def __dealloc__(self) -> None:  # (compiled only: the C arrays and lock)
        if cython.compiled:
            _free_ints(self.links)  # type: ignore[name-defined]  # noqa: F821 (inproc.pxd)
            _free_ints(self.slot_space)  # type: ignore[name-defined]  # noqa: F821
            _free_lock(self)  # type: ignore[name-defined]  # noqa: F821

    def _lock(self) -> int:
        """Take the write lock."""
        if cython.compiled:
            _lock_links(self)  # type: ignore[name-defined]  # noqa: F821 (inproc.pxd)
        else:
            self.lock.acquire()
        return 0

    def _unlock(self) -> int:
        """Release the write lock."""
        if cython.compiled:
            _unlock_links(self)  # type: ignore[name-defined]  # noqa: F821 (inproc.pxd)
        else:
            self.lock.release()
        return 0

    # -- routing ----------------------------------------------------------------------

    def _table(self, key: Hashable) -> dict[Hashable, _Node]:
        """The table holding ``key``: its namespace's if it has one, else the main one.
        The caller passes the key through :func:`_subkey` for a namespace's table."""
        spaces = self.spaces
        if spaces and isinstance(key, tuple) and len(key) > 1:
            table = spaces.get(key[0])
            if table is not None:
                return table
        return self.nodes

    def _owner(self, slot: int) -> dict[Hashable, _Node]:
        """The table holding the entry of ``slot``."""
        if self.space_tables:
            number: int = self.slot_space[slot]
            if number >= 0:
                return self.space_tables[number]
        return self.nodes

    def space(self, namespace: str) -> dict[Hashable, _Node]:
        """The table of ``namespace``, made on first use: entries already held under keys
        ``(namespace, ...)`` move into it, keeping their place in the recency list."""
        self._lock()
        try:
            table = self.spaces.get(namespace)
            if table is not None:
                return table
            table = {}
            number = len(self.space_tables)
            if not number:
                self._grow_space(self.slots)
            self.space_tables.append(table)
            self.space_ids[id(table)] = number
            main = self.nodes
            moved = []
            for key, node in list(main.items()):
                if isinstance(key, tuple) and len(key) > 1 and _same_head(key[0], namespace):
                    moved.append((key, node))
            for key, node in moved:
                # The same node, now under its subkey: a reader that found it in the main
                # table still reads its slot.
                sub = _subkey(key)
                slot = node.slot
                self._set_key(slot, sub)
                self.slot_space[slot] = number
                table[sub] = node
            self.spaces[namespace] = table  # from here on such keys route to the table
            for key, _ in moved:
                del main[key]
            return table
        finally:
            self._unlock()

    # -- slots and links; callers hold the lock (writers) or the GIL alone (compiled reads)

    def _key(self, slot: int) -> Any:
        return self.chunks[slot >> _CHUNK_BITS][(slot & _CHUNK_MASK) * 2]

    def _value(self, slot: int) -> Any:
        return self.chunks[slot >> _CHUNK_BITS][(slot & _CHUNK_MASK) * 2 + 1]

    def _set_key(self, slot: int, key: Any) -> int:
        self.chunks[slot >> _CHUNK_BITS][(slot & _CHUNK_MASK) * 2] = key
        return 0

    def _set_value(self, slot: int, value: Any) -> Any:
        """Store ``value`` in ``slot``; return the value it replaces."""
        chunk = self.chunks[slot >> _CHUNK_BITS]
        i = (slot & _CHUNK_MASK) * 2 + 1
        previous = chunk[i]
        chunk[i] = value
        return previous

    def _unlink(self, slot: int) -> int:
        links = self.links
        prev = links[2 * slot]
        nxt = links[2 * slot + 1]
        if prev == _ROOT:
            self.head = nxt
        else:
            links[2 * prev + 1] = nxt
        if nxt == _ROOT:
            self.tail = prev
        else:
            links[2 * nxt] = prev
        return 0

    def _push(self, slot: int) -> int:
        """Link an unlinked ``slot`` as the most recently used."""
        links = self.links
        head = self.head
        links[2 * slot] = _ROOT
        links[2 * slot + 1] = head
        if head == _ROOT:
            self.tail = slot
        else:
            links[2 * head] = slot
        self.head = slot
        return 0

    def _touch(self, slot: int) -> int:
        """Make a linked ``slot`` the most recently used."""
        if self.head != slot:
            self._unlink(slot)
            self._push(slot)
        return 0

    def _alloc(self) -> int:
        """A free slot: one freed before, else a new one (room made as needed)."""
        slot = self.free
        if slot != _ROOT:
            self.free = self.links[2 * slot + 1]
            return slot
        slot = self.top
        if slot == _MAX_SLOTS:
            raise MemoryError(f"an in-process cache holds at most {_MAX_SLOTS} entries")
        if slot == self.slots:
            self._grow(min(max(2 * slot, 8), self.capacity, _MAX_SLOTS))
        if slot == len(self.chunks) << _CHUNK_BITS:
            # A chunk at a time, never more than the capacity needs: no big list is ever
            # copied (no pause, no freed block left behind in the heap).
            self.chunks.append([None] * (2 * min(_CHUNK, self.capacity - slot)))
        self.top = slot + 1
        return slot

    def _grow(self, slots: int) -> int:
        """Room in the link arrays for ``slots`` slots."""
        if cython.compiled:
            self.links = _grow_ints(self.links, 2 * slots)  # type: ignore[name-defined]  # noqa: F821 (inproc.pxd)
        else:
            self.links.extend([_ROOT] * (2 * (slots - self.slots)))
        if self.space_tables:
            self._grow_space(slots)
        self.slots = slots
        return 0

    def _grow_space(self, slots: int) -> int:
        """Room in ``slot_space`` for ``slots`` slots (the new ones: -1)."""
        old = self.space_room
        if cython.compiled:
            self.slot_space = _grow_ints(self.slot_space, slots)  # type: ignore[name-defined]  # noqa: F821 (inproc.pxd)
            for slot in range(old, slots):
                self.slot_space[slot] = -1
        else:
            self.slot_space.extend([-1] * (slots - old))
        self.space_room = slots
        return 0

    def _free_slot(self, slot: int) -> int:
        """Empty an unlinked slot (the caller keeps its key and value referenced until it
        is done: dropping them may run Python code) and put it on the free list."""
        chunk = self.chunks[slot >> _CHUNK_BITS]
        i = (slot & _CHUNK_MASK) * 2
        chunk[i] = None
        chunk[i + 1] = None
        if self.space_tables:
            self.slot_space[slot] = -1
        self.links[2 * slot] = _UNLINKED
        self.links[2 * slot + 1] = self.free
        self.free = slot
        return 0

    # -- reads ----------------------------------------------------------------------

    def live(self, key: Hashable, now: float, miss: Any) -> Any:
        """The value of ``key`` if it is held and expires after ``now`` (marked used), else
        ``miss``."""
        table = self._table(key)
        if table is not self.nodes:
            key = _subkey(key)
        return self.live_in(table, key, now, miss)

    def live_in(self, table: dict[Hashable, _Node], key: Hashable, now: float, miss: Any) -> Any:
        """:meth:`live` for a key already routed: ``key`` within ``table``."""
        node = table.get(key)
        if node is None or not node.expires > now:
            return miss
        if cython.compiled:
            return self._live_node(node, miss)
        self._lock()
        try:
            return self._live_node(node, miss)
        finally:
            self._unlock()

    def _live_node(self, node: _Node, miss: Any) -> Any:
        slot = node.slot
        if slot < 0:  # dropped since the lookup
            return miss
        if self.touch_on_read and self.head != slot:
            self._unlink(slot)
            self._push(slot)
        return self._value(slot)

    def entry(self, key: Hashable, now: float) -> Entry:
        """``(value, expires)`` of ``key``, marked used if live at ``now``; KeyError if absent."""
        table = self._table(key)
        node = table.get(key if table is self.nodes else _subkey(key))
        if node is None:
            raise KeyError(key)
        if cython.compiled:
            return self._entry_node(node, now, key)
        self._lock()
        try:
            return self._entry_node(node, now, key)
        finally:
            self._unlock()

    def _entry_node(self, node: _Node, now: float, key: Hashable) -> Entry:
        slot = node.slot
        if slot < 0:
            raise KeyError(key)
        expires = node.expires
        if self.touch_on_read and expires > now:
            self._touch(slot)
        return (self._value(slot), expires)

    def peek(self, key: Hashable) -> Entry:
        """``(value, expires)`` of ``key`` without marking it used; KeyError if absent."""
        table = self._table(key)
        node = table.get(key if table is self.nodes else _subkey(key))
        if node is None:
            raise KeyError(key)
        if cython.compiled:
            return self._peek_node(node, key)
        self._lock()
        try:
            return self._peek_node(node, key)
        finally:
            self._unlock()

    def _peek_node(self, node: _Node, key: Hashable) -> Entry:
        slot = node.slot
        if slot < 0:
            raise KeyError(key)
        return (self._value(slot), node.expires)

    # -- writes ---------------------------------------------------------------------

    def put(self, key: Hashable, value: Any, expires: float) -> None:
        """Store an entry (the most recently used), evicting the least recently used if full."""
        self._lock()
        try:
            table = self._table(key)
            if table is not self.nodes:
                key = _subkey(key)
            old = table.get(key)  # may run the key's Python __eq__: nothing changed yet
            if old is not None:
                # In place: no Python code runs between the two writes (the old value is
                # still referenced here, so dropping it from its chunk cannot run a
                # __del__ in between).
                slot = old.slot
                previous = self._set_value(slot, value)  # noqa: F841 (kept alive until done)
                old.expires = expires
                self._touch(slot)
                return
            self._insert(table, key, value, expires)
        finally:
            self._unlock()

    def _insert(
        self, table: dict[Hashable, _Node], key: Hashable, value: Any, expires: float
    ) -> int:
        """Store a new entry (lock held); ``key`` is not in ``table``."""
        victim_key = victim_value = victim = None
        if self.size >= self.capacity:
            # Evict before inserting, so a reader of len() never sees capacity + 1. The
            # evicted slot takes the new entry at once (it never visits the free list).
            slot = self.tail
            chunk = self.chunks[slot >> _CHUNK_BITS]
            i = (slot & _CHUNK_MASK) * 2
            victim_key = chunk[i]
            victim_value = chunk[i + 1]
            victim = self._owner(slot).pop(victim_key)  # may run Python code: all still held
            self._unlink(slot)
            victim.slot = _UNLINKED
            self.evictions += 1
        else:
            slot = self._alloc()
            chunk = self.chunks[slot >> _CHUNK_BITS]
            i = (slot & _CHUNK_MASK) * 2
        chunk[i] = key
        chunk[i + 1] = value
        if self.space_tables:  # (a reused slot may still name another table)
            self.slot_space[slot] = -1 if table is self.nodes else self.space_ids[id(table)]
        if cython.compiled and victim is not None and _sole_ref(victim):  # type: ignore[name-defined]  # noqa: F821 (inproc.pxd)
            # Nobody else holds the evicted node (no reader between its lookup and its
            # read): it becomes the new entry's, saving an allocation and a free.
            node = victim
            node.slot = slot
            node.expires = expires
        else:
            node = _new_node(slot, expires)
        self._push(slot)
        table[key] = node
        if victim is None:
            self.size += 1
        del victim_key, victim_value, victim  # dropped once the store is whole again
        return 0

    def add(self, key: Hashable, value: Any, expires: float, now: float) -> bool:
        """Store only if ``key`` is absent or expired at ``now``; return whether stored."""
        self._lock()
        try:
            table = self._table(key)
            if table is not self.nodes:
                key = _subkey(key)
            old = table.get(key)
            if old is not None:
                if old.expires > now:
                    return False
                slot = old.slot
                previous = self._set_value(slot, value)  # noqa: F841 (as in put)
                old.expires = expires
                self._touch(slot)
                return True
            self._insert(table, key, value, expires)
            return True
        finally:
            self._unlock()

    def set_expiry(self, key: Hashable, expires: float, direction: int) -> bool:
        """Give an existing entry a new expiry, keeping its place; return whether it existed."""
        self._lock()
        try:
            table = self._table(key)
            if table is not self.nodes:
                key = _subkey(key)
            old = table.get(key)
            if old is None:
                return False
            if _moves(old.expires, expires, direction):
                old.expires = expires
            return True
        finally:
            self._unlock()

    def pop(self, key: Hashable) -> None:
        """Remove ``key`` if present."""
        hash(key)  # unhashable keys fail here, outside the lock
        self._lock()
        try:
            table = self._table(key)
            if table is not self.nodes:
                key = _subkey(key)
            node = table.pop(key, None)  # may run Python code: all still held
            if node is not None:
                slot = node.slot
                held_key = self._key(slot)
                value = self._value(slot)
                self._unlink(slot)
                node.slot = _UNLINKED
                self._free_slot(slot)
                self.size -= 1
                del held_key, value
        finally:
            self._unlock()

    def _slots_from_tail(self) -> list[int]:
        """The linked slots, least recently used first."""
        out: list[int] = []
        slot = self.tail
        links = self.links
        while slot != _ROOT:
            out.append(slot)
            slot = links[2 * slot]
        return out

    def _tables(self) -> list[dict[Hashable, _Node]]:
        return [self.nodes, *self.space_tables]

    def clear(self) -> None:
        """Remove everything (namespace tables stay, empty: cached functions hold them)."""
        self._lock()
        try:
            for table in self._tables():
                for node in table.values():
                    node.slot = _UNLINKED
            chunks = self.chunks
            self.chunks = []
            self.head = self.tail = self.free = _ROOT
            self.top = 0
            self.size = 0
            for table in self._tables():
                table.clear()
            del chunks
        finally:
            self._unlock()

    def purge(self, cutoff: float) -> int:
        """Remove entries that expired before ``cutoff``; return how many."""
        self._lock()
        try:
            dead = [
                (table, key)
                for table in self._tables()
                for key, node in table.items()
                if node.expires < cutoff
            ]
            held = []
            for table, key in dead:
                node = table.pop(key)
                slot = node.slot
                held.append((self._key(slot), self._value(slot)))
                self._unlink(slot)
                node.slot = _UNLINKED
                self._free_slot(slot)
            self.size -= len(dead)
            del held
        finally:
            self._unlock()
        return len(dead)

    def items(self) -> list[tuple[Hashable, Entry]]:
        """A snapshot of the entries (under their full keys), least recently used first."""
        self._lock()
        try:
            heads = {id(table): name for name, table in self.spaces.items()}
            out: list[tuple[Hashable, Entry]] = []
            for slot in self._slots_from_tail():
                table = self._owner(slot)
                key = self._key(slot)
                node = table[key]
                if table is not self.nodes:
                    head = heads[id(table)]
                    key = (head, *key) if isinstance(key, tuple) else (head, key)
                out.append((key, (self._value(slot), node.expires)))
            return out
        finally:
            self._unlock()


def _same_head(head: Any, namespace: str) -> bool:
    """Whether a key's head routes to ``namespace``'s table (dict equality, as routing)."""
    try:
        return hash(head) == hash(namespace) and bool(head == namespace)
    except Exception:  # a head whose __eq__ fails: its key cannot be looked up here either
        return False


class LinkedLRU(BaseStore):
    """Exact LRU store over a dict of linked nodes: the :class:`Cache` of the compiled
    build, where a read hashes its key once and moves its node without a lock.

    Usable in pure Python too (reads then lock to move the node). ``touch_on_read=False``
    makes eviction insertion-ordered, as for :class:`OrderedLRU`.
    """

    __slots__ = ("_links",)
    touch = None  # lookup() marks the key used itself

    def __init__(self, size: int, touch_on_read: bool = True) -> None:
        self._links = _Links(check_capacity(size), touch_on_read)

    @property
    def capacity(self) -> int:  # type: ignore[override]  # read-only here: _links holds it
        """Maximum number of entries."""
        return self._links.capacity

    @property
    def evictions(self) -> int:  # type: ignore[override]  # read-only here: _links counts
        """Entries evicted to make room, so far."""
        return self._links.evictions

    def lookup(self, key: Hashable) -> Entry:
        return self._links.entry(key, -math.inf)

    def peek(self, key: Hashable) -> Entry:
        return self._links.peek(key)

    def set(self, key: Hashable, entry: Entry, now: float) -> None:
        self._links.put(key, entry[0], entry[1])

    def add(self, key: Hashable, entry: Entry, now: float) -> bool:
        return self._links.add(key, entry[0], entry[1], now)

    def set_expiry(self, key: Hashable, expires: float, direction: int = 0) -> bool:
        return self._links.set_expiry(key, expires, direction)

    def pop(self, key: Hashable) -> None:
        self._links.pop(key)

    def clear(self) -> None:
        self._links.clear()

    def purge(self, cutoff: float) -> int:
        return self._links.purge(cutoff)

    def items(self) -> list[tuple[Hashable, Entry]]:
        return self._links.items()

    def __len__(self) -> int:
        return self._links.size


#: The exact LRU store: the fastest of the two for the build that runs (each is usable in
#: both, and both pass the same tests).
Cache: type[LinkedLRU] | type[OrderedLRU] = LinkedLRU if _COMPILED else OrderedLRU
#: The seed's name for the exact LRU store.
LRUCache = Cache

# Fibonacci hashing: the high bits of hash * golden ratio give a second position that is
# independent enough of hash % n, also for small consecutive ints (whose hash is themselves).
_GOLD = 0x9E3779B1


class CuckooCache(BaseStore):
    """Approximate LRU in a fixed table with bounded probes; see the module docstring."""

    __slots__ = ("_count", "_epoch", "_lock", "_n", "_slots", "_stamps", "capacity", "evictions")

    def __init__(self, size: int) -> None:
        self.capacity = check_capacity(size)
        self.evictions = 0
        self._n = self.capacity
        # A slot holds (key, entry, hash) as one tuple, so a lock-free reader sees either
        # the old or the new occupant whole, never a key paired with another key's value.
        self._slots: list[tuple[Hashable, Entry, int] | None] = [None] * self._n
        self._stamps = [0] * self._n
        # Recency is counted in writes: a read stamps the slot with the current write epoch
        # (no counter to bump on the read path); victims are only chosen by writes anyway.
        self._epoch = 1
        self._count = 0
        self._lock = threading.Lock()

    def _candidates(self, h: int) -> tuple[int, int, int, int]:
        n = self._n
        i = h % n
        j = (h * _GOLD >> 16) % n
        i2 = i ^ 1
        j2 = j ^ 1
        return i, (i2 if i2 < n else i), j, (j2 if j2 < n else j)

    def _find(self, key: Hashable) -> int:
        h = hash(key)
        slots = self._slots
        n = self._n
        i = h % n
        s = slots[i]
        if s is not None and (s[0] is key or s[0] == key):
            return i
        for i in self._candidates(h)[1:]:
            s = slots[i]
            if s is not None and (s[0] is key or s[0] == key):
                return i
        return -1

    def lookup(self, key: Hashable) -> Entry:
        # The four probes of _candidates, unrolled: this is the read hot path.
        h = hash(key)
        slots = self._slots
        n = self._n
        i = h % n
        s = slots[i]
        if s is not None and (s[0] is key or s[0] == key):
            self._stamps[i] = self._epoch
            return s[1]
        i ^= 1
        if i < n:
            s = slots[i]
            if s is not None and (s[0] is key or s[0] == key):
                self._stamps[i] = self._epoch
                return s[1]
        i = (h * _GOLD >> 16) % n
        s = slots[i]
        if s is not None and (s[0] is key or s[0] == key):
            self._stamps[i] = self._epoch
            return s[1]
        i ^= 1
        if i < n:
            s = slots[i]
            if s is not None and (s[0] is key or s[0] == key):
                self._stamps[i] = self._epoch
                return s[1]
        raise KeyError(key)

    __getitem__ = lookup  # no extra call on the client's read path

    def peek(self, key: Hashable) -> Entry:
        i = self._find(key)
        s = self._slots[i] if i >= 0 else None
        # Re-checked: a writer may have replaced the slot since _find looked at it.
        if s is None or not (s[0] is key or s[0] == key):
            raise KeyError(key)
        return s[1]

    def set(self, key: Hashable, entry: Entry, now: float) -> None:
        h = hash(key)
        i = h % self._n
        slots = self._slots
        lock = self._lock
        lock.acquire()  # not `with`: its __exit__ call costs as much as both
        try:
            s = slots[i]
            if s is not None and (s[0] is key or s[0] == key):  # overwrite in place
                slots[i] = (key, entry, h)
                self._stamps[i] = self._epoch
                return
            self._set_locked(key, entry, h, now)
        finally:
            lock.release()

    def _set_locked(self, key: Hashable, entry: Entry, h: int, now: float) -> None:
        slots = self._slots
        stamps = self._stamps
        cands = self._candidates(h)
        empty = -1
        for i in cands:
            s = slots[i]
            if s is None:
                if empty < 0:
                    empty = i
            elif s[0] is key or s[0] == key:
                slots[i] = (key, entry, h)
                stamps[i] = self._next_epoch()
                return
        if empty >= 0:
            slots[empty] = (key, entry, h)
            stamps[empty] = self._next_epoch()
            self._count += 1
            return
        victim = self._oldest(cands, now)
        self._relocate(victim, now)
        slots[victim] = (key, entry, h)
        stamps[victim] = self._next_epoch()

    def _next_epoch(self) -> int:
        self._epoch += 1  # under the write lock
        return self._epoch

    def _oldest(self, cands: Iterable[int], now: float) -> int:
        slots = self._slots
        stamps = self._stamps
        best = -1
        best_stamp = 0
        for i in cands:
            s = slots[i]
            if s is None or s[1][1] <= now:
                return i  # empty or expired: the ideal victim
            if best < 0 or stamps[i] < best_stamp:
                best, best_stamp = i, stamps[i]
        return best

    def _relocate(self, victim: int, now: float) -> None:
        """Move the occupant of ``victim`` to its other bucket if a worse entry is there.

        Either way exactly one entry leaves the table (or none, when a slot was empty).
        """
        slots = self._slots
        stamps = self._stamps
        occupant = slots[victim]
        if occupant is None:
            return
        if occupant[1][1] <= now:  # expired: just drop it
            self.evictions += 1
            return
        alt = [i for i in self._candidates(occupant[2]) if i != victim]
        if alt:
            target = self._oldest(alt, now)
            held = slots[target]
            if held is None:
                slots[target] = occupant
                stamps[target] = stamps[victim]
                self._count += 1  # the new key fills the victim slot: one more entry
                return
            if stamps[target] < stamps[victim] or held[1][1] <= now:
                slots[target] = occupant
                stamps[target] = stamps[victim]
        self.evictions += 1

    def add(self, key: Hashable, entry: Entry, now: float) -> bool:
        h = hash(key)
        with self._lock:
            i = self._find(key)
            if i >= 0:
                s = self._slots[i]
                if s is not None and s[1][1] > now:
                    return False
            self._set_locked(key, entry, h, now)
            return True

    def set_expiry(self, key: Hashable, expires: float, direction: int = 0) -> bool:
        with self._lock:
            i = self._find(key)
            if i < 0:
                return False
            s = self._slots[i]
            if s is None:
                return False
            k, (value, old), h = s
            if _moves(old, expires, direction):
                self._slots[i] = (k, (value, expires), h)
            return True

    def pop(self, key: Hashable) -> None:
        hash(key)  # unhashable keys fail here, outside the lock
        with self._lock:
            i = self._find(key)
            if i >= 0:
                self._slots[i] = None
                self._count -= 1

    def clear(self) -> None:
        with self._lock:
            self._slots[:] = [None] * self._n
            self._stamps[:] = [0] * self._n
            self._count = 0

    def purge(self, cutoff: float) -> int:
        removed = 0
        with self._lock:
            slots = self._slots
            for i, s in enumerate(slots):
                if s is not None and s[1][1] < cutoff:
                    slots[i] = None
                    removed += 1
            self._count -= removed
        return removed

    def items(self) -> list[tuple[Hashable, Entry]]:
        return [(s[0], s[1]) for s in list(self._slots) if s is not None]

    def __len__(self) -> int:
        return self._count


#: Store names accepted by :class:`InprocCacheClient` (e.g. from a settings file).
STORES: dict[str, Callable[[int], BaseStore]] = {
    "lru": Cache,
    "cuckoo": CuckooCache,
    "lru-notouch": lambda size: Cache(size, touch_on_read=False),
}


def _make_store(store: Any, size: int) -> BaseStore:
    if store is None:
        return Cache(size)
    if isinstance(store, str):
        try:
            return STORES[store](size)
        except KeyError:
            raise ConfigurationError(
                f"unknown store {store!r}: expected one of {sorted(STORES)}, a store class "
                "or a store instance"
            ) from None
    if isinstance(store, type) and issubclass(store, BaseStore):
        # A store class takes the capacity (BaseStore's contract; it declares no __init__).
        return cast("Callable[[int], BaseStore]", store)(size)
    if isinstance(store, BaseStore):
        return store
    raise ConfigurationError(
        f"unknown store {store!r}: expected one of {sorted(STORES)}, a store class "
        "(Cache, CuckooCache) or a store instance"
    )


class _InprocClient:
    """The in-process client's state and methods; :class:`InprocCacheClient` adds the base
    class. Kept apart because the compiled build makes this a C extension type (see
    ``inproc.pxd``), which cannot derive from the Python ``BaseCacheClient``.
    """

    def __init__(
        self,
        size: int,
        store: str | type[BaseStore] | BaseStore | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        size = check_capacity(size)
        self.store = _make_store(store, size)
        self._clock = clock
        self._touch = self.store.touch
        self._set = self.store.set
        # The exact-LRU store's parts: put inlines its set(). None for other stores.
        lru = self.store if type(self.store) is OrderedLRU else None
        self._data = lru._data if lru is not None else None
        self._acquire = lru._lock.acquire if lru is not None else None
        self._release = lru._lock.release if lru is not None else None
        self._move = lru._move if lru is not None else None
        self._capacity = self.store.capacity
        # The linked store's state: get and put call it directly (C calls when compiled).
        self._links = self.store._links if type(self.store) is LinkedLRU else None
        # What the other stores' reads subscript: the exact-LRU store's dict itself (no
        # call), else the store. None for the linked store, read through ``_links``.
        if lru is not None:
            self._entries: OrderedDict[Hashable, Entry] | BaseStore | None = self._data
        elif self._links is not None:
            self._entries = None
        else:
            self._entries = self.store
        # The C clock only where it is time.monotonic's (Linux; elsewhere it returns -1).
        self._c_clock = _COMPILED and clock is _MONOTONIC and _c_monotonic() > 0  # noqa: F821
        # A float: CPython recycles float objects but allocates every int above 256, so
        # counting a hit in a float is the cheaper step in pure Python (exact to 2**53): an
        # int made the pure build's get hit 6% slower (195 ns against 183, 3 interleaved
        # runs on 2026-12-04; 1.73x cachetools.TTLCache instead of 1.84x).
        self._hits = 0.0
        self._misses = 0
        self._sets = 0

    # -- reads --------------------------------------------------------------------

    def get(self, key: Hashable, default: Any = NONE) -> Any:
        """Return the live value for ``key``, ``default`` if given, else raise a miss."""
        entries = self._entries
        clock = self._clock  # a local: see put
        try:
            if entries is not None:
                value, expires = entries[key]
                if expires > (_c_monotonic() if _COMPILED and self._c_clock else clock()):  # noqa: F821 (in inproc.pxd)
                    touch = self._touch
                    if touch is not None:
                        try:  # noqa: SIM105 (hot path)
                            touch(key)
                        except (KeyError, RuntimeError):  # dropped or moved meanwhile
                            pass
                    self._hits += 1.0
                    return value
            else:
                now = _c_monotonic() if _COMPILED and self._c_clock else clock()  # noqa: F821 (in inproc.pxd)
                value = self._links.live(key, now, _MISS)  # type: ignore[union-attr]  # _entries is None: a LinkedLRU's
                if value is not _MISS:
                    self._hits += 1.0
                    return value
        except KeyError:
            pass
        except TypeError:
            raise _bad_key(key) from None
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default

    def getTtl(self, key: Hashable, default: Any = NONE) -> tuple[Any, float]:
        """Return ``(value, ttl_left)``; expired entries still held have ttl_left <= 0."""
        entries = self._entries
        clock = self._clock  # a local: see put
        try:
            if entries is None:
                now = _c_monotonic() if _COMPILED and self._c_clock else clock()  # noqa: F821 (in inproc.pxd)
                value, expires = self._links.entry(key, now)  # type: ignore[union-attr]  # _entries is None: a LinkedLRU's
                left = expires - now
                if left > 0:
                    self._hits += 1.0
                else:
                    self._misses += 1
                return value, left
            value, expires = entries[key]
        except KeyError:
            self._misses += 1
            if default is NONE:
                raise CacheMissError(key) from None
            return default, -1.0
        except TypeError:
            raise _bad_key(key) from None
        left = expires - (_c_monotonic() if _COMPILED and self._c_clock else clock())  # noqa: F821 (in inproc.pxd)
        if left > 0:
            touch = self._touch
            if touch is not None:
                try:  # noqa: SIM105 (hot path)
                    touch(key)
                except (KeyError, RuntimeError):
                    pass
            self._hits += 1.0
        else:
            self._misses += 1
        return value, left

    def namespace_table(self, namespace: str) -> dict[Hashable, Any] | None:
        """The table of keys ``(namespace, *rest)`` for :meth:`namespace_get`, or None when
        the store has no such tables (only :class:`LinkedLRU` has) or a subclass overrides
        ``get``/``getTtl`` (its reads must go through them). For ``@cached``."""
        links = self._links
        cls = type(self)
        # getattr: the Python-level methods (compiled, the bare names are C functions).
        if links is None or any(
            getattr(cls, name) is not getattr(_InprocClient, name) for name in ("get", "getTtl")
        ):
            return None
        return links.space(namespace)

    def namespace_get(
        self, table: dict[Hashable, Any], rest: tuple[Hashable, ...], threshold: float, miss: Any
    ) -> Any:
        """The value of the key ``(namespace, *rest)`` from ``table`` (that namespace's, from
        :meth:`namespace_table`; ``rest`` not empty) if more than ``threshold`` seconds of it are
        left, else ``miss``: the hit path of ``@cached``, which falls back to
        :meth:`getTtl` (counted there) on ``miss``."""
        clock = self._clock  # a local: see put
        now = _c_monotonic() if _COMPILED and self._c_clock else clock()  # noqa: F821 (in inproc.pxd)
        value = self._links.live_in(table, _rest_key(rest), now + threshold, miss)  # type: ignore[union-attr]  # tables come from a LinkedLRU's _links
        if value is not miss:
            self._hits += 1.0
        return value

    def contains(self, key: Hashable, ttl: float | None = None) -> bool:
        """True if ``key`` has a live entry (with more than ``ttl`` seconds left, if given)."""
        try:
            expires = self.store.peek(key)[1]
        except KeyError:
            return False
        except TypeError:
            raise _bad_key(key) from None
        return expires - self._clock() > (ttl or 0)

    def getTtlMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> Iterator[tuple[Hashable, tuple[Any, float]]]:
        """Yield ``(key, (value, ttl_left))``; misses give ``(default, -1.0)``."""
        getTtl = self.getTtl
        for key in keys:
            value, ttl = getTtl(key, _MISS)
            yield key, (default, ttl) if value is _MISS else (value, ttl)

    def getMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> Iterator[tuple[Hashable, Any]]:
        """Yield ``(key, value)``; misses and expired entries give ``default``."""
        get = self.get
        for key in keys:
            value = get(key, _MISS)
            yield key, default if value is _MISS else value

    # -- writes -------------------------------------------------------------------

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (``math.inf``: until evicted)."""
        cls = ttl.__class__
        if (cls is not float and cls is not int) or not ttl >= 0:
            ttl = check_ttl(ttl)
        # Bound methods held by the instance are loaded into locals before calling: calling
        # self._clock() directly is a slow, unspecialised method lookup in pure Python.
        clock = self._clock
        now = _c_monotonic() if _COMPILED and self._c_clock else clock()  # noqa: F821 (in inproc.pxd)
        links = self._links
        if links is not None:
            try:
                links.put(key, value, now + ttl)
            except TypeError:
                raise _bad_key(key) from None
            self._sets += 1
            return
        entry = (value, now + ttl)
        data = self._data
        try:
            if data is None:
                store_set = self._set
                store_set(key, entry, now)
            else:
                # OrderedLRU.set (its _set_locked under the lock), inlined: two calls less on
                # the hot path of that store. The lock's own methods, as `with lock:` costs
                # twice as much (its __exit__ call).
                # Set whenever _data is (an OrderedLRU store).
                acquire: Callable[[], object] = self._acquire  # type: ignore[assignment]  # _data is set
                release: Callable[[], object] = self._release  # type: ignore[assignment]  # _data is set
                move: Callable[[Hashable], object] = self._move  # type: ignore[assignment]  # _data is set
                acquire()
                try:
                    if key in data:
                        data[key] = entry
                        move(key)
                    else:  # a new key goes to the young end by itself
                        if len(data) >= self._capacity:
                            data.popitem(last=False)
                            self.store.evictions += 1
                        data[key] = entry
                finally:
                    release()
        except TypeError:
            raise _bad_key(key) from None
        self._sets += 1

    def add(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Store only if ``key`` is absent or expired; return whether it was stored."""
        ttl = check_ttl(ttl)
        now = self._clock()
        try:
            added = self.store.add(key, (value, now + ttl), now)
        except TypeError:
            raise _bad_key(key) from None
        if added:
            self._sets += 1
        return added

    def delete(self, key: Hashable) -> None:
        """Remove ``key`` if present."""
        try:
            self.store.pop(key)
        except TypeError:
            raise _bad_key(key) from None

    def renew(self, key: Hashable, ttl: float) -> bool:
        """Keep an existing entry (stale or not) alive at least ``ttl`` seconds from now: an
        expiry already later stays; return whether it existed."""
        ttl = check_ttl(ttl)
        try:
            return self.store.set_expiry(key, self._clock() + ttl, 1)
        except TypeError:
            raise _bad_key(key) from None

    def expire(self, key: Hashable) -> None:
        """Mark the entry stale now, keeping its value for :meth:`getTtl`."""
        try:
            self.store.set_expiry(key, self._clock(), -1)
        except TypeError:
            raise _bad_key(key) from None

    def clear(self) -> None:
        """Remove every entry."""
        self.store.clear()

    def purge(self, timeout: float = 0) -> None:
        """Drop entries that expired more than ``timeout`` seconds ago."""
        timeout = check_ttl(timeout, "timeout")
        self.store.purge(self._clock() - timeout)

    # -- introspection ------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Maximum number of entries."""
        return self.store.capacity

    @property
    def usage(self) -> int:
        """Entries held now (expired ones count until purged or evicted)."""
        return len(self.store)

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        return CacheStats(int(self._hits), self._misses, self._sets, self.store.evictions, 0)


class InprocCacheClient(_InprocClient, BaseCacheClient):
    """A process-private cache of at most ``size`` entries.

    ``store`` picks the eviction structure: ``None``/``"lru"`` (:class:`Cache`, exact LRU),
    ``"lru-notouch"``, ``"cuckoo"`` (:class:`CuckooCache`), a store class, or a ready store
    instance (its own capacity then wins over ``size``). ``clock`` is a monotonic time
    source, replaceable in tests. Thread-safe.
    """

    # Spelled out here: the compiled _InprocClient is an extension type, whose own __init__
    # has no signature that inspect.signature() or help() can read.
    def __init__(
        self,
        size: int,
        store: str | type[BaseStore] | BaseStore | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        **legacy: Any,
    ) -> None:
        if legacy:  # 1.x's store_class/store_args/store_kwargs
            from chorde import _legacy

            store = _legacy.store_options(check_capacity(size), legacy, store)
        _InprocClient.__init__(self, size, store, clock=clock)


if _COMPILED:
    # The Python wrappers Cython makes for cpdef methods (see inproc.pxd) lose the return
    # annotation; put it back so that both builds have one signature.
    _InprocClient.__dict__["get"].__annotations__["return"] = "Any"
    _InprocClient.__dict__["getTtl"].__annotations__["return"] = "tuple[Any, float]"
    _InprocClient.__dict__["namespace_get"].__annotations__["return"] = "Any"


# A private "no value" marker, so the multi-gets can pass a default that is never a real value.
_MISS: Any = object()


if not TYPE_CHECKING:  # (type checkers keep flagging unknown names)

    def __getattr__(name: str) -> Any:
        # chorde 1.x's names here: what replaced them (see chorde._legacy).
        from chorde import _legacy

        return _legacy.attribute(__name__, name)
