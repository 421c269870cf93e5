"""Tags and revisions: dropping groups of entries without scanning keys.

A tag (``"user:42"``) and a cached function each own a *revision record* in the client: a
random number under a key of its own (:func:`tag_key`, :func:`function_key`). An entry
that belongs to a group is stored with the revisions its groups had when it was computed,
and a read fetches those records together with the entry (one ``getTtlMulti``: one round
trip to a network cache). Invalidating a group writes a new revision: every entry stamped
with an older one reads as a miss from then on, in every process sharing the client, and
ages out of the backend by ttl or eviction. Under a coherent client the write is
broadcast like any other, so every process drops its private copy of the record.

Revisions are random, not counters: a record that is evicted and made again must not
bring back entries stamped under an old one (a missing record never matches).

The HTTP response cache (:mod:`chorde.http`) and ``@cached`` share the tag records, so
``invalidate_tags(client, "product:7")`` drops the cached pages and the cached function
results tagged ``product:7`` alike.

The operations are written once, as generators of client calls (``("getMulti", keys,
None)``, ``("add", key, revision, ttl)`` ...), run by :func:`run` (blocking calls) or
:func:`arun` (the awaitable twins), or by another driver of the same steps.
"""

from __future__ import annotations

import math
import random
from collections.abc import Generator, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from chorde.clients.base import BaseCacheClient

__all__ = [
    "Stamped",
    "ainvalidate_tags",
    "bump_steps",
    "check_tags",
    "function_key",
    "invalidate_tags",
    "new_revision",
    "revisions_steps",
    "tag_key",
]

#: One client call a step asks for: ``(method_name, *args)``.
Step = tuple[Any, ...]

_TAG = "chorde.tag"
_FUNCTION = "chorde.fn"
#: Attempts at making a record another process keeps evicting between our add and get.
_ATTEMPTS = 3


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
            # nothing stored later, so entries stamped with it read as misses.
            revision = new_revision()
        revisions.append(revision)
    return tuple(revisions)


def bump_steps(keys: Iterable[Hashable]) -> Generator[Step, Any, None]:
    """Give each record a new revision: entries stamped with the old one become misses."""
    for key in keys:
        yield ("put", key, new_revision(), math.inf)


def run(client: BaseCacheClient, steps: Generator[Step, Any, Any]) -> Any:
    """Run ``steps`` with ``client``'s blocking methods."""
    value: Any = None
    try:
        while True:
            name, *args = steps.send(value)
            value = getattr(client, name)(*args)
            if isinstance(value, Iterator):
                value = list(value)
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


async def arun(client: BaseCacheClient, steps: Generator[Step, Any, Any]) -> Any:
    """Run ``steps`` with ``client``'s awaitable methods (``get`` -> ``aget`` ...)."""
    value: Any = None
    try:
        while True:
            name, *args = steps.send(value)
            value = await getattr(client, "a" + name)(*args)
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


def invalidate_tags(client: BaseCacheClient, *tags: str) -> None:
    """Drop every entry of ``client`` tagged with one of ``tags`` (cached function results
    and HTTP responses alike), in every process sharing the client: one write per tag."""
    run(client, bump_steps(tag_key(tag) for tag in check_tags(tags)))


async def ainvalidate_tags(client: BaseCacheClient, *tags: str) -> None:
    """Awaitable :func:`invalidate_tags`."""
    await arun(client, bump_steps(tag_key(tag) for tag in check_tags(tags)))
