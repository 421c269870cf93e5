"""Answers made from a stored response: Age, 304 Not Modified, byte ranges.

RFC 9111 section 5.1 (Age), RFC 9110 sections 13.1.2 (If-None-Match), 13.1.5 (If-Range),
14.2 and 15.3.7 (Range, 206), 15.4.5 (what a 304 carries). Pure functions.
"""

from __future__ import annotations

from typing import NamedTuple

from chorde.http.entry import StoredResponse
from chorde.http.fields import byte_range, if_none_match_matches
from chorde.http.request import CacheRequest

__all__ = ["Reply", "reply"]


class Reply(NamedTuple):
    """An answer the cache gives itself: status, headers (lower-case bytes), body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


# RFC 9110 section 15.4.5: what a 304 carries of the 200 it stands for.
_NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"age"}
)


_new = tuple.__new__  # a NamedTuple built without its __new__'s Python frame


def reply(req: CacheRequest, entry: StoredResponse, now: float, *, hit: bool) -> Reply:
    """The status, headers and body answering ``req`` from ``entry``.

    A hit carries ``Age`` (RFC 9111 section 5.1), and so does a fresh answer that came
    with one; a request whose ``If-None-Match`` matches the entry's ETag gets ``304 Not
    Modified`` (RFC 9110 section 13.1.2); one asking for a single byte range gets it.
    """
    headers = list(entry.headers)
    age = int(now - entry.stored_at)
    if hit or age > 0:  # on a miss, the age the response came with (section 4.2.3)
        headers.append((b"age", b"%d" % max(0, age)))
    if (
        req.if_none_match is not None
        and entry.etag is not None
        and if_none_match_matches(req.if_none_match, entry.etag.decode("latin-1"))
    ):
        kept = [(k, v) for k, v in headers if k in _NOT_MODIFIED_FIELDS]
        return Reply(304, kept, b"")
    if req.range is not None and entry.status == 200 and _if_range_holds(req, entry):
        return _partial(req, entry, headers)
    return _new(Reply, (entry.status, headers, b"" if req.head else entry.body))  # (a hit)


def _if_range_holds(req: CacheRequest, entry: StoredResponse) -> bool:
    """Whether ``If-Range`` (if any) lets the range be served (RFC 9110 section 13.1.5):
    it must be the entry's strong ETag, or its Last-Modified date exactly."""
    condition = req.if_range
    if condition is None:
        return True
    condition = condition.strip()
    if condition.startswith('"'):
        return entry.etag is not None and condition.encode("latin-1") == entry.etag
    modified = [v for k, v in entry.headers if k == b"last-modified"]
    return len(modified) == 1 and modified[0].decode("latin-1").strip() == condition


def _partial(req: CacheRequest, entry: StoredResponse, headers: list[tuple[bytes, bytes]]) -> Reply:
    """A single byte range of a stored full response: 206, or 416 when unsatisfiable
    (RFC 9110 sections 14.2, 15.3.7); any other Range form gets the whole body."""
    assert req.range is not None
    body = entry.body
    length = len(body)
    span = byte_range(req.range, length)
    rest = [(k, v) for k, v in headers if k not in (b"content-length", b"content-range")]
    if span is None:
        return Reply(entry.status, headers, b"" if req.head else body)
    if span is False:
        rest.append((b"content-range", b"bytes */%d" % length))
        return Reply(416, [*rest, (b"content-length", b"0")], b"")
    first, last = span
    rest.append((b"content-range", b"bytes %d-%d/%d" % (first, last, length)))
    rest.append((b"content-length", b"%d" % (last - first + 1)))
    return Reply(206, rest, b"" if req.head else body[first : last + 1])
