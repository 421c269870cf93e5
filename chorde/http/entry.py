"""A stored HTTP response, and the marker naming the fields its resource varies on.

Both are kept in a chorde client as plain tuples of str, bytes, ints, floats and bools
(tagged with a version string), so every client, memcached's signed pickles included,
holds them, and a value of another shape or version reads as a miss.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["StoredResponse", "vary_marker", "vary_marker_names", "vary_marker_until"]

_ENTRY_TAG = "chorde-http-3"
_VARY_TAG = "chorde-vary-3"


class StoredResponse(NamedTuple):
    """A complete response as the cache keeps it."""

    status: int
    #: Lower-case field names; hop-by-hop fields and ``Age`` removed.
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    #: Wall-clock time the response was generated (its start, minus any ``Age`` it came with).
    stored_at: float
    #: Seconds it stays fresh after ``stored_at``.
    lifetime: float
    #: May answer a request carrying ``Authorization`` (RFC 9111 section 3.5).
    for_authorized: bool
    #: May answer a request carrying cookies (it said so, or its variant keys on them).
    for_cookies: bool
    #: The request fields its variant is keyed on (sorted), and a digest of their values.
    vary: tuple[str, ...]
    variant: str
    etag: bytes | None
    #: Seconds past its freshness it may still be served while refreshed / when the
    #: application fails (RFC 5861); 0 for a response that must be revalidated.
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    #: The conditional request fields that revalidate it with the origin (its own ETag
    #: and Last-Modified as ``If-None-Match``/``If-Modified-Since``), empty when it has none.
    validators: tuple[tuple[bytes, bytes], ...] = ()
    #: Its tags (from the tag field, which is not stored) with each tag's revision when it
    #: was stored: purging a tag changes its revision, and the entry then reads as a miss.
    tags: tuple[tuple[str, int], ...] = ()
    #: Stored from a ``no-cache`` response: never served without revalidation (RFC 9111
    #: section 5.2.2.4).
    no_cache: bool = False

    def to_value(self) -> tuple[Any, ...]:
        """The plain tuple a client stores."""
        return (_ENTRY_TAG, *self)

    @classmethod
    def from_value(cls, value: Any) -> StoredResponse | None:
        """The entry a client returned, or None for anything else (a miss)."""
        if type(value) is tuple and len(value) == _ENTRY_LEN and value[0] == _ENTRY_TAG:
            return _new(cls, value[1:])  # (the length is checked: _make would check it again)
        return None


_ENTRY_LEN = len(StoredResponse._fields) + 1
_new = tuple.__new__


def vary_marker(names: tuple[str, ...], until: float) -> tuple[str, tuple[str, ...], float]:
    """The value stored under a resource's key when its responses vary on ``names``; it is
    needed until ``until`` (wall clock), when the longest-kept variant goes."""
    return (_VARY_TAG, names, until)


def vary_marker_names(value: Any) -> tuple[str, ...] | None:
    """The field names of a vary marker, None when ``value`` is not one."""
    if type(value) is tuple and len(value) == 3 and value[0] == _VARY_TAG:
        names = value[1]
        if type(names) is tuple and all(type(n) is str for n in names):
            return names
    return None


def vary_marker_until(value: Any) -> float:
    """Until when a vary marker is needed (0 when ``value`` is not one)."""
    if vary_marker_names(value) is not None and isinstance(value[2], float):
        return float(value[2])
    return 0.0
