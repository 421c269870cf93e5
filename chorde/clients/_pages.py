"""Paging of values larger than memcached's item size limit.

A big payload is cut into pages stored under keys derived from a random per-write token, so
pages of two writes never mix. The entry under the caller's key then holds a small signed
:class:`PageManifest` naming the token and a digest of every page. A reader fetches all
pages and reassembles the payload only if every page is present and matches its digest; a
missing, stale or foreign page makes the whole value a miss. The reassembled payload is itself
a signed serializer payload, verified again before it is unpickled.

Pages are written before the manifest, so a reader never sees a manifest whose pages were not
written yet. Pages of an overwritten or deleted value are not deleted: they share the entry's
server expiry and age out (or are evicted) on their own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PageManifest", "assemble", "make_pages"]

_DIGEST_SIZE = 16


def _digest(page: bytes | memoryview) -> bytes:
    return hashlib.blake2b(page, digest_size=_DIGEST_SIZE).digest()


@dataclass(frozen=True, slots=True)
class PageManifest:
    """What the entry under the caller's key holds when its value is paged."""

    token: str
    size: int
    digests: tuple[bytes, ...]

    def page_keys(self, prefix: bytes) -> list[bytes]:
        """The memcached keys of the pages, in order."""
        stem = b"%spg.%s." % (prefix, self.token.encode())
        return [b"%s%d" % (stem, i) for i in range(len(self.digests))]


def make_pages(payload: bytes, page_size: int) -> tuple[PageManifest, list[memoryview]]:
    """Cut ``payload`` into pages of at most ``page_size`` bytes, with their manifest."""
    if page_size <= 0:
        raise ValueError(f"page_size must be > 0, got {page_size!r}")
    view = memoryview(payload)
    pages = [view[i : i + page_size] for i in range(0, len(payload), page_size)]
    manifest = PageManifest(os.urandom(12).hex(), len(payload), tuple(_digest(p) for p in pages))
    return manifest, pages


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
