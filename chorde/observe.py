"""What the cache does, seen from outside: counters per cached function and route, and hooks.

Every ``@cached`` function counts its own calls (``fn.cache_info()``) and every route of an
HTTP response cache its requests: a :class:`CacheInfo` each. Counting costs nothing
measurable on a hit: the counters are plain numbers, unlocked (under heavy thread
contention a few increments may be lost, as with the clients' ``stats``).

A *hook* is a callable taking an :class:`Event`, installed process-wide with
:func:`add_hook` and called on every hit, miss, stale answer, finished background refresh
and error, with the function's or the route's name and the time it took. With no hook
installed nothing is timed and nothing is called: installing the first one switches every
cached function to its timed path, removing the last one switches them back. A hook runs
in the caller's thread, so it should be quick; what it raises is logged and dropped.

:func:`snapshot` gathers every live function's and route's counters, by name, for
exporters (:mod:`chorde.exporters.prometheus`, :mod:`chorde.exporters.otel`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

__all__ = [
    "ERROR",
    "FUNCTION",
    "HIT",
    "KINDS",
    "MISS",
    "REFRESH",
    "ROUTE",
    "STALE",
    "CacheInfo",
    "Counters",
    "Event",
    "Hook",
    "add_hook",
    "hooked",
    "hooks",
    "remove_hook",
    "snapshot",
]

logger = logging.getLogger("chorde.observe")

#: A call answered from the cache with a live entry.
HIT = "hit"
#: A call that found nothing usable and computed (or waited for a computation).
MISS = "miss"
#: A call answered with an entry past its ttl (``.bg()``, ``stale_if_error``, RFC 5861).
STALE = "stale"
#: A background refresh that finished (its duration is the computation's).
REFRESH = "refresh"
#: A computation that raised (a call's, or a background refresh's).
ERROR = "error"
KINDS = (HIT, MISS, STALE, REFRESH, ERROR)

#: :attr:`Event.scope` of ``@cached`` functions and of HTTP routes.
FUNCTION = "function"
ROUTE = "route"


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """The counters of one cached function (or route), like ``functools.lru_cache``'s
    ``cache_info()``.

    * ``hits``: calls answered from the cache with a live entry (a refresh window's
      included);
    * ``misses``: calls that found nothing usable and computed, or waited for a
      computation already running;
    * ``stale``: calls answered with an entry past its ttl (``.bg()``, ``stale_if_error``,
      ``stale-while-revalidate``);
    * ``refreshes``: background refreshes started;
    * ``coalesced``: calls that waited for a computation another caller had started;
    * ``errors``: computations that raised;
    * ``claims``: computations this process ran under a cluster-wide claim (a coherent
      client's compute-once).
    """

    hits: int = 0
    misses: int = 0
    stale: int = 0
    refreshes: int = 0
    coalesced: int = 0
    errors: int = 0
    claims: int = 0

    def __add__(self, other: CacheInfo) -> CacheInfo:
        return CacheInfo(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))

    @property
    def hit_ratio(self) -> float:
        """Answers from the cache (hits and stale answers) over calls; 0.0 before any."""
        total = self.hits + self.misses + self.stale
        return (self.hits + self.stale) / total if total else 0.0


def _values(info: CacheInfo) -> tuple[int, ...]:
    return tuple(getattr(info, f.name) for f in dataclasses.fields(info))


class Counters:
    """The mutable counters behind a :class:`CacheInfo` (cheap, unlocked)."""

    __slots__ = ("claims", "coalesced", "errors", "hits", "misses", "refreshes", "stale")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.refreshes = 0
        self.coalesced = 0
        self.errors = 0
        self.claims = 0

    def info(self, hits: float = 0) -> CacheInfo:
        """A snapshot, with ``hits`` more hits (counted elsewhere: a function's fast path)."""
        return CacheInfo(
            self.hits + int(hits),
            self.misses,
            self.stale,
            self.refreshes,
            self.coalesced,
            self.errors,
            self.claims,
        )


class Event(NamedTuple):
    """What a hook receives."""

    #: One of :data:`KINDS`.
    kind: str
    #: The function's ``module.qualname`` (``@cached``), or the route's name.
    name: str
    #: Seconds: the call's, or for :data:`REFRESH` the background computation's.
    duration: float
    #: :data:`FUNCTION` or :data:`ROUTE`.
    scope: str = FUNCTION


#: A hook: called with each :class:`Event`.
Hook = Callable[[Event], Any]


class Source(Protocol):
    """What :func:`register` takes: something that counts, for :func:`snapshot`."""

    def stats_items(self) -> Iterable[tuple[str, str, CacheInfo]]:
        """``(scope, name, info)`` for each function or route it counts."""
        ...


class Watcher(Protocol):
    """What :func:`watch` takes: told when hooks come and go."""

    def hooks_changed(self, on: bool) -> None:
        """``on``: some hook is installed."""
        ...


_lock = threading.Lock()
_hooks: tuple[Hook, ...] = ()
_watchers: weakref.WeakSet[Any] = weakref.WeakSet()
_sources: weakref.WeakSet[Any] = weakref.WeakSet()
_last_failure = 0.0
#: A failing hook is logged at most once per this many seconds.
_LOG_INTERVAL = 60.0


def hooks() -> tuple[Hook, ...]:
    """The installed hooks, in installation order."""
    return _hooks


def add_hook(hook: Hook) -> None:
    """Install ``hook`` (process-wide): it gets every :class:`Event` from now on."""
    global _hooks
    if not callable(hook):
        raise TypeError(f"a hook must be callable with an Event, got {hook!r}")
    with _lock:
        if hook in _hooks:
            return
        _hooks = (*_hooks, hook)
        _tell(True)


def remove_hook(hook: Hook) -> None:
    """Uninstall ``hook`` (no error if it was not installed)."""
    global _hooks
    with _lock:
        if hook not in _hooks:
            return
        _hooks = tuple(h for h in _hooks if h != hook)
        _tell(bool(_hooks))


@contextlib.contextmanager
def hooked(hook: Hook) -> Iterator[Hook]:
    """``with hooked(hook):`` installs ``hook`` for the block."""
    add_hook(hook)
    try:
        yield hook
    finally:
        remove_hook(hook)


def _tell(on: bool) -> None:
    for watcher in list(_watchers):
        watcher.hooks_changed(on)


def watch(watcher: Watcher) -> bool:
    """Tell ``watcher`` (weakly held) when hooks come and go; True if some are installed."""
    with _lock:
        _watchers.add(watcher)
        return bool(_hooks)


def register(source: Source) -> None:
    """Count ``source`` (weakly held) in :func:`snapshot`."""
    with _lock:
        _sources.add(source)


def emit(kind: str, name: str, duration: float, scope: str = FUNCTION) -> None:
    """Call every hook with an :class:`Event` (what a hook raises is logged, rate-limited)."""
    global _last_failure
    event = Event(kind, name, duration, scope)
    for hook in _hooks:
        try:
            hook(event)
        except Exception:
            now = time.monotonic()
            if now - _last_failure >= _LOG_INTERVAL:
                _last_failure = now
                logger.exception("chorde hook %r failed on %r", hook, event)


def snapshot() -> dict[tuple[str, str], CacheInfo]:
    """Every live cached function's and route's counters, ``(scope, name) -> CacheInfo``
    (summed over objects of one name: a function cached once per app, say)."""
    with _lock:
        sources = list(_sources)
    out: dict[tuple[str, str], CacheInfo] = {}
    for source in sources:
        for scope, name, info in source.stats_items():
            key = (scope, name)
            current = out.get(key)
            out[key] = info if current is None else current + info
    return out
