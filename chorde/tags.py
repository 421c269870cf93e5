"""Tags and revisions: dropping groups of entries without scanning keys.

A tag (``"user:42"``) and a cached function each own a *revision record* in the client: a
random number under a key of its own (:func:`tag_key`, :func:`function_key`). An entry
that belongs to a group is stored with the revisions its groups had when it was computed,
and a read checks those records (fetched together with the entry: one ``getTtlMulti``,
one round trip to a network cache, or vouched for by a recent read, below). Invalidating a
group writes a new revision: every entry stamped with an older one reads as a miss from
then on, in every process sharing the client (within ``revision_check`` seconds in the
others), and ages out of the backend by ttl or eviction. Under a coherent client the write
is broadcast like any other, so every process drops its private copy of the record.

Revisions are random, not counters: a record that is evicted and made again must not
bring back entries stamped under an old one (a missing record never matches).

The HTTP response cache (:mod:`chorde.http`) and ``@cached`` share the tag records, so
``invalidate_tags(client, "product:7")`` drops the cached pages and the cached function
results tagged ``product:7`` alike.

Reading the records with every hit costs a second key per read (on memcached about as
much CPU as the value's own). So a process keeps a *view* of the records it read
(:class:`RevisionView`, one per client) and trusts it for ``revision_check`` seconds
(:func:`set_revision_check`): a hit whose entry carries the revisions of a fresh view is
one single-key read, and a view older than that is refreshed by the read that finds it
so (the entry and its records together, as above). The guarantee, per client:

* an invalidation made in this process (``invalidate_tags``, ``invalidate_all()``, a
  purge of the HTTP cache) is seen by this process's next read, whichever client made it:
  every view is dropped once the new revision is written;
* one made in another process is seen within ``revision_check`` seconds (1 s by
  default): a view never answers past that without the records being read again;
* an in-process client reads its records with every hit (``0``: they are a dict lookup
  away), and so does a coherent client, whose bus keeps its private copies of the records
  current.

The operations are written once, as generators of client calls (``("getMulti", keys,
None)``, ``("add", key, revision, ttl)`` ...), run on one client by
:func:`chorde.clients.steps.run` (blocking calls) or :func:`~chorde.clients.steps.arun`
(the awaitable twins) through :func:`~chorde.clients.steps.on`, or by another driver of the
same steps (the HTTP cache's).
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import threading
import time
import weakref
from collections.abc import Generator, Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from chorde.clients import steps
from chorde.clients.base import BaseCacheClient
from chorde.clients.inproc import InprocCacheClient

__all__ = [
    "DEFAULT_REVISION_CHECK",
    "RevisionView",
    "Stamped",
    "ainvalidate_tags",
    "bump_steps",
    "check_tags",
    "function_key",
    "invalidate_tags",
    "new_revision",
    "revision_check",
    "revisions_steps",
    "set_revision_check",
    "tag_key",
    "view",
]

#: One client call a step asks for: ``(method_name, *args)``.
Step = tuple[Any, ...]

_TAG = "chorde.tag"
_FUNCTION = "chorde.fn"
#: Attempts at making a record another process keeps evicting between our add and get.
_ATTEMPTS = 3
#: Seconds a view of a shared client's records is trusted (see the module docstring).
DEFAULT_REVISION_CHECK = 1.0
#: Records a view remembers; past that it starts again empty (computed tags can be many).
_VIEW_SIZE = 10_000
#: The views' clock (a test may replace it).
_clock = time.monotonic


class Stamped(NamedTuple):
    """A value stored with the revisions of its groups (in the order of their keys)."""

    value: Any
    revisions: tuple[int, ...]


def tag_key(tag: str) -> tuple[str, str]:
    """The key of ``tag``'s revision record (one per tag and client, whoever tags)."""
    return (_TAG, tag)


def function_key(namespace: str) -> tuple[str, str]:
    """The key of the revision record of the cached function of ``namespace``."""
    return (_FUNCTION, namespace)


def check_tags(tags: Any, option: str = "tags") -> tuple[str, ...]:
    """``tags`` as a tuple of non-empty strings; a TypeError/ValueError naming ``option``."""
    if isinstance(tags, str | bytes):
        raise TypeError(f"{option} must be a list of tags, not a single string: {tags!r}")
    try:
        out = tuple(tags)
    except TypeError:
        raise TypeError(f"{option} must be a list of str tags, got {tags!r}") from None
    for tag in out:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"{option}: a tag must be a non-empty str, got {tag!r}")
    return out


def new_revision() -> int:
    """A fresh random revision."""
    return random.getrandbits(62)


# ---- views: the records as this process last read them ---------------------------------

#: Moves whenever this process writes a record: a view noted from a read that started
#: before that is not kept (see :meth:`RevisionView.note`).
_writes = itertools.count()
_generation = next(_writes)
_views: weakref.WeakKeyDictionary[BaseCacheClient, RevisionView] = weakref.WeakKeyDictionary()
_views_lock = threading.Lock()


class RevisionView:
    """The revisions of one client's records as this process last read them, each trusted
    for ``bound`` seconds from its read (see the module docstring)."""

    __slots__ = ("__weakref__", "bound", "known")

    def __init__(self, bound: float) -> None:
        self.bound = bound
        #: record key -> (revision, trusted until, (revision,))
        self.known: dict[Hashable, tuple[int, float, tuple[int]]] = {}

    def current(self, keys: Sequence[Hashable]) -> tuple[int, ...] | None:
        """The revisions of ``keys`` if every one is known and still trusted, else None."""
        known = self.known
        now = _clock()
        if len(keys) == 1:  # (a function without tags: the common case)
            got = known.get(keys[0])
            return got[2] if got is not None and got[1] > now else None
        out = []
        for key in keys:
            got = known.get(key)
            if got is None or not got[1] > now:
                return None
            out.append(got[0])
        return tuple(out)

    def note(
        self, keys: Sequence[Hashable], revisions: Sequence[int | None], generation: int
    ) -> None:
        """Remember what a read found (None: no record; negative: a revision made up for
        a client that keeps none), unless this process wrote a record since the read
        began (``generation``: :func:`generation` then): the read may predate the write."""
        if generation != _generation:
            return
        known = self.known
        if len(known) >= _VIEW_SIZE:
            known.clear()
        until = _clock() + self.bound
        for key, revision in zip(keys, revisions, strict=True):
            if revision is not None and revision >= 0:
                known[key] = (revision, until, (revision,))


def generation() -> int:
    """Taken before a read whose records go to :meth:`RevisionView.note`."""
    return _generation


def _forget() -> None:
    """This process wrote a record: no view answers from before the write."""
    global _generation
    _generation = next(_writes)
    with _views_lock:
        views = list(_views.values())
    for v in views:
        v.known.clear()


def _default_bound(client: BaseCacheClient) -> float:
    if isinstance(client, InprocCacheClient):
        return 0.0  # reading the records costs a dict lookup or two
    coherent = sys.modules.get("chorde.clients.coherent")
    if coherent is not None and isinstance(client, coherent.CoherentWrapperClient):
        return 0.0  # its bus drops the private copies of a record at once
    return DEFAULT_REVISION_CHECK


def view(client: BaseCacheClient) -> RevisionView:
    """The view of ``client``'s records (made on first use)."""
    with _views_lock:
        got = _views.get(client)
        if got is None:
            got = _views[client] = RevisionView(_default_bound(client))
        return got


def revision_check(client: BaseCacheClient) -> float:
    """Seconds this process trusts what it read of ``client``'s records (see the module
    docstring): 0 for an in-process or a coherent client, :data:`DEFAULT_REVISION_CHECK`
    otherwise, unless set."""
    return view(client).bound


def set_revision_check(client: BaseCacheClient, seconds: float) -> None:
    """Trust what this process read of ``client``'s records for ``seconds`` (0: read them
    with every hit). An invalidation made by another process sharing ``client`` is seen
    here within that time; this process's own are seen at once whatever it is."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise ValueError(f"revision_check must be a number of seconds >= 0, got {seconds!r}")
    got = view(client)
    got.bound = float(seconds)
    got.known.clear()


# ---- the operations, as steps -----------------------------------------------------------


def revisions_steps(
    keys: Sequence[Hashable], known: Mapping[Hashable, Any] | None = None
) -> Generator[Step, Any, tuple[int, ...]]:
    """The current revision of each record of ``keys``, making (once, atomically, with
    ``add``) the records that have none. ``known``: what a read already fetched (a
    missing key or None there is read again)."""
    if known is None:
        known = dict((yield ("getMulti", list(keys), None)) or ())
    revisions = []
    for key in keys:
        revision = known.get(key)
        attempts = 0
        while not isinstance(revision, int) and attempts < _ATTEMPTS:
            attempts += 1
            made = new_revision()
            if (yield ("add", key, made, math.inf)):
                revision = made
            else:  # another process made it first: use theirs
                revision = yield ("get", key, None)
        if not isinstance(revision, int):
            # The client keeps no record (down, or too small): a revision that matches
            # nothing stored later, so entries stamped with it read as misses (negative:
            # records are not, and no view remembers it).
            revision = -1 - new_revision()
        revisions.append(revision)
    return tuple(revisions)


def bump_steps(keys: Iterable[Hashable]) -> Generator[Step, Any, None]:
    """Give each record a new revision: entries stamped with the old one become misses."""
    for key in keys:
        try:
            yield ("put", key, new_revision(), math.inf)
        finally:  # (written, or maybe written: either way no view answers from before)
            _forget()


def invalidate_tags(client: BaseCacheClient, *tags: str) -> None:
    """Drop every entry of ``client`` tagged with one of ``tags`` (cached function results
    and HTTP responses alike), in every process sharing the client: one write per tag."""
    steps.run(steps.on(client, bump_steps(tag_key(tag) for tag in check_tags(tags))))


async def ainvalidate_tags(client: BaseCacheClient, *tags: str) -> None:
    """Awaitable :func:`invalidate_tags`."""
    await steps.arun(steps.on(client, bump_steps(tag_key(tag) for tag in check_tags(tags))))
