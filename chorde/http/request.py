"""One request as a response cache sees it: its key, its credentials, its directives."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence

from chorde.http.entry import StoredResponse
from chorde.http.fields import EMPTY_CACHE_CONTROL, CacheControl
from chorde.http.route import COOKIE_PREFIX, Route

__all__ = [
    "FRESH",
    "STALE",
    "STALE_WHILE_REVALIDATE",
    "CacheRequest",
    "FieldPairs",
    "Headers",
    "collect",
]

#: Header fields as frameworks hold them: ``(name, value)`` pairs of ``str`` or of ``bytes``
#: (ASGI), names in any case; or a lookup ``values(lower_case_name) -> [value, ...]`` where
#: the framework indexes its fields (WSGI's environ, tornado's HTTPHeaders), which spares
#: reading every field of a request that carries thousands.
Headers = Sequence[tuple[str, str]] | Sequence[tuple[bytes, bytes]] | Callable[[str], Sequence[str]]
#: A response's fields: always the pairs (they are read, stored and sent on).
FieldPairs = Sequence[tuple[str, str]] | Sequence[tuple[bytes, bytes]]


def collect(headers: Headers, names: Iterable[str]) -> dict[str, list[str]]:
    """The values of the (lower-case) ``names`` in ``headers``, in one pass over them."""
    if callable(headers):
        return {name: list(headers(name)) for name in names}
    found: dict[str, list[str]] = {name: [] for name in names}
    if not headers:
        return found
    if isinstance(headers[0][0], bytes):
        if type(names) is tuple:  # the policy's own lists of names: encoded once
            wanted = {raw: found[name] for raw, name in _raw_names(names)}
        else:
            wanted = {name.encode("latin-1"): values for name, values in found.items()}
        for raw_name, raw_value in headers:
            bucket = wanted.get(raw_name.lower())  # type: ignore[arg-type]  # bytes pairs
            if bucket is not None:
                bucket.append(raw_value.decode("latin-1"))  # type: ignore[union-attr]  # bytes
    else:
        for name, value in headers:
            bucket = found.get(name.lower())  # type: ignore[arg-type]  # str pairs
            if bucket is not None:
                bucket.append(value)  # type: ignore[arg-type]  # str pairs
    return found


@functools.lru_cache(maxsize=64)
def _raw_names(names: tuple[str, ...]) -> tuple[tuple[bytes, str], ...]:
    return tuple((name.encode("latin-1"), name) for name in names)


class CacheRequest:
    """One request as the cache sees it: its key, its credentials, what it asks of caches.

    Built by :meth:`Rules.request`. ``bypass`` is None when the cache may be used, else
    the reason it may not (the adapter then just calls the application).
    """

    __slots__ = (
        "_cookies",
        "_headers",
        "_variants",
        "authorized",
        "bypass",
        "cc",
        "cookie_lines",
        "head",
        "if_none_match",
        "if_range",
        "key",
        "max_vary_bytes",
        "range",
        "route",
        "vary_miss",
    )

    def __init__(self, route: Route, headers: Headers, max_vary_bytes: int) -> None:
        self.max_vary_bytes = max_vary_bytes
        self.route = route
        self._headers = headers
        self._variants: dict[tuple[str, ...], str | None] = {}
        self._cookies: list[tuple[str, str]] | None = None
        self.bypass: str | None = None
        self.key: tuple[Hashable, ...] = ()
        self.head = False
        self.cc: CacheControl = EMPTY_CACHE_CONTROL
        self.authorized = False
        self.cookie_lines: Sequence[str] = ()
        self.if_none_match: str | None = None
        #: Set by a lookup that found the resource varying but not this request's variant.
        self.vary_miss = False
        #: The request's ``Range`` and ``If-Range`` (one line each), if any.
        self.range: str | None = None
        self.if_range: str | None = None

    @property
    def has_cookies(self) -> bool:
        return bool(self.cookie_lines)

    @property
    def revalidates(self) -> bool:
        """True when the request refuses every stored response (RFC 9111 5.2.1.4, 5.2.1.1)."""
        cc = self.cc
        return "no-cache" in cc or cc.seconds("max-age") == 0 or cc.seconds("min-fresh") == 0

    @property
    def only_if_cached(self) -> bool:
        """True when a miss must be answered 504 (RFC 9111 section 5.2.1.7)."""
        return "only-if-cached" in self.cc

    def _cookie(self, name: str) -> str | None:
        if self._cookies is None:
            pairs: list[tuple[str, str]] = []
            for line in self.cookie_lines:
                for part in line.split(";"):
                    key, eq, value = part.strip().partition("=")
                    if eq:
                        pairs.append((key.strip(), value.strip()))
            self._cookies = pairs
        values = [v for k, v in self._cookies if k == name]
        return ",".join(values) if values else None

    def variant(self, names: tuple[str, ...]) -> str | None:
        """A digest of this request's values of ``names``; None when they are too large.

        Values are normalised as RFC 9111 section 4.1 allows (lines combined, whitespace
        around list members dropped); an absent field differs from an empty one.
        """
        if not names:
            return ""
        memo = self._variants
        if names in memo:
            return memo[names]
        fields = [n for n in names if not n.startswith(COOKIE_PREFIX)]
        found = collect(self._headers, fields) if fields else {}
        digest = hashlib.blake2b(digest_size=20)
        size = 0
        for name in names:
            if name.startswith(COOKIE_PREFIX):
                value = self._cookie(name[len(COOKIE_PREFIX) :])
            else:
                lines = found[name]
                value = (
                    ",".join(p.strip() for line in lines for p in line.split(","))
                    if lines
                    else None
                )
            if value is None:
                digest.update(b"-;")
            else:
                data = value.encode("latin-1", "replace")
                size += len(data)
                digest.update(b"%d:" % len(data))
                digest.update(data)
        result = digest.hexdigest() if size <= self.max_vary_bytes else None
        memo[names] = result
        return result

    def forward_reason(self, stale: bool) -> str:
        """Why the cache goes forward for this request (RFC 9211 ``fwd``): the request
        asked it to, its stored response is stale, its variant is not stored, or nothing is."""
        if self.revalidates:
            return "request"
        if stale:
            return "stale"
        return "vary-miss" if self.vary_miss else "uri-miss"

    def usable(self, entry: StoredResponse) -> bool:
        """True when ``entry`` is this request's to be answered from, fresh or not: its
        credentials and cookies allow it, and it is the variant the request asks for."""
        if self.authorized and not entry.for_authorized:
            return False
        if self.cookie_lines and not entry.for_cookies:
            return False
        if self.route.keyed_on and not set(self.route.keyed_on).issubset(entry.vary):
            return False  # stored before the route declared what it depends on
        return not entry.vary or self.variant(entry.vary) == entry.variant

    def freshness(self, entry: StoredResponse, now: float) -> str:
        """How ``entry`` may answer now: :data:`FRESH`, :data:`STALE_WHILE_REVALIDATE` (serve
        it, refresh it in the background: RFC 5861) or :data:`STALE` (go forward, revalidating
        with its validators if it has any). The request's own directives count (RFC 9111
        5.2.1): ``no-cache``, ``max-age`` and ``min-fresh`` refuse what they refuse."""
        if entry.no_cache:
            return STALE
        age = now - entry.stored_at
        left = entry.lifetime - age
        cc = self.cc
        if cc is not EMPTY_CACHE_CONTROL and cc:  # (most requests have none: no len() call)
            if self.revalidates:
                return STALE
            max_age = cc.seconds("max-age")
            if max_age is not None and age > max_age:
                return STALE
            min_fresh = cc.seconds("min-fresh")
            if min_fresh is not None and left < min_fresh:
                return STALE
        if left > 0:
            return FRESH
        if not cc and -left <= entry.stale_while_revalidate:
            return STALE_WHILE_REVALIDATE
        return STALE

    def accepts(self, entry: StoredResponse, now: float) -> bool:
        """True when ``entry`` may answer this request now, as a fresh hit."""
        return self.usable(entry) and self.freshness(entry, now) == FRESH


#: :meth:`CacheRequest.freshness` verdicts.
FRESH = "fresh"
STALE_WHILE_REVALIDATE = "stale-while-revalidate"
STALE = "stale"
