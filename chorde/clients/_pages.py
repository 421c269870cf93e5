"""Paging of values larger than memcached's item size limit.

A big payload is cut into pages stored under keys derived from the entry's own memcached key
and a random per-write token, so pages of two keys never mix and two writes of one key
almost never do. The entry under the caller's key then holds a small signed
:class:`PageManifest` naming the token and a digest of every page. A reader fetches all
pages and reassembles the payload only if every page is present and matches its digest; a
missing, stale or foreign page makes the whole value a miss. The reassembled payload is itself
a signed serializer payload, verified again before it is unpickled.

Pages are written before the manifest, so a reader never sees a manifest whose pages were not
written yet. The manifest's memcached item carries :attr:`PageManifest.flags` (the token and
the page count) in memcached's per-item flags, so a client overwriting or deleting the entry
can learn, from a flags-only probe in the same round trip, which pages to delete, without
fetching or verifying the old manifest. That clean-up is best effort: pages it misses share
the entry's server expiry and age out (or are evicted) on their own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PageManifest", "assemble", "make_pages", "owner_tag", "page_keys_from_flags"]

_DIGEST_SIZE = 16
_TOKEN_BITS = 16
_COUNT_MASK = (1 << 16) - 1


def _digest(page: bytes | memoryview) -> bytes:
    return hashlib.blake2b(page, digest_size=_DIGEST_SIZE).digest()


def owner_tag(owner: bytes) -> str:
    """A short tag of the entry's memcached key, part of its pages' keys."""
    return hashlib.blake2b(owner, digest_size=8).hexdigest()


def _keys(prefix: bytes, tag: str, token: str, count: int) -> list[bytes]:
    stem = b"%spg.%s.%s." % (prefix, tag.encode(), token.encode())
    return [b"%s%d" % (stem, i) for i in range(count)]


@dataclass(frozen=True, slots=True)
class PageManifest:
    """What the entry under the caller's key holds when its value is paged."""

    owner: str
    token: str
    size: int
    digests: tuple[bytes, ...]

    def page_keys(self, prefix: bytes) -> list[bytes]:
        """The memcached keys of the pages, in order."""
        return _keys(prefix, self.owner, self.token, len(self.digests))

    @property
    def flags(self) -> int:
        """memcached item flags of the manifest's entry: token and page count, never 0."""
        return int(self.token, 16) << 16 | min(len(self.digests), _COUNT_MASK)


def page_keys_from_flags(prefix: bytes, owner: bytes, flags: int) -> list[bytes]:
    """The page keys of the paged entry under memcached key ``owner`` with these flags."""
    token = f"{flags >> 16:04x}"
    return _keys(prefix, owner_tag(owner), token, flags & _COUNT_MASK)


def make_pages(
    payload: bytes, page_size: int, owner: bytes
) -> tuple[PageManifest, list[memoryview]]:
    """Cut ``payload`` into pages of at most ``page_size`` bytes, with their manifest."""
    if page_size <= 0:
        raise ValueError(f"page_size must be > 0, got {page_size!r}")
    view = memoryview(payload)
    pages = [view[i : i + page_size] for i in range(0, len(payload), page_size)]
    token = os.urandom(_TOKEN_BITS // 8).hex()
    digests = tuple(_digest(p) for p in pages)
    return PageManifest(owner_tag(owner), token, len(payload), digests), pages


def assemble(
    manifest: PageManifest, keys: list[bytes], found: Mapping[bytes, bytes]
) -> bytes | None:
    """Join the pages found under ``keys``; None if any is missing or fails its digest."""
    parts = []
    for key, digest in zip(keys, manifest.digests, strict=True):
        page = found.get(key)
        if page is None or _digest(page) != digest:
            return None
        parts.append(page)
    payload = b"".join(parts)
    return payload if len(payload) == manifest.size else None
