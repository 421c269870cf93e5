"""What a response cache may store and serve, and under which key: one policy for every adapter.

Pure code: adapters translate their framework's request and response into the arguments of
:meth:`Rules.request` and :meth:`Rules.decide`; no I/O and no framework here. The rules, one
per line with the RFC 9111 (or RFC 9110) section each comes from, are tabled in the manual
(``docs/http-caching.md``); each is cited where the code applies it. In short: a field that
cannot be parsed means "do not store"; Host, scheme, path and the query (parameters sorted by
name, not decoded) are always in the key, and so are the request's values of every field the
response, or the route, varies on; nothing that came with credentials or cookies is shared
unless the response, or the route, says it may be.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chorde.http.entry import StoredResponse
from chorde.http.fields import (
    EMPTY_CACHE_CONTROL,
    host_name,
    normalise_host,
    normalise_query,
    parse_cache_control,
    parse_vary,
    strong_etag,
)
from chorde.http.freshness import (
    corrected_initial_age,
    explicit_lifetime,
    heuristic_lifetime,
    stale_extensions,
)
from chorde.http.request import CacheRequest, FieldPairs, Headers, collect
from chorde.http.route import _FIELD_NAME, DEFAULT_ROUTE, Route, _names

__all__ = [
    "DEFAULT_MAX_VARY_BYTES",
    "DEFAULT_MAX_VARY_FIELDS",
    "DEFAULT_STATUSES",
    "Decision",
    "Rules",
]

#: RFC 9110 section 15.1: the statuses cacheable by default (206 left out: no range support).
DEFAULT_STATUSES: frozenset[int] = frozenset(
    {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}
)
#: A response varying on more request fields than this is not stored.
DEFAULT_MAX_VARY_FIELDS = 32
#: A request whose values of the varying fields add up to more bytes is not cached.
DEFAULT_MAX_VARY_BYTES = 8192

_REQUEST_FIELDS = (
    "authorization",
    "cookie",
    "cache-control",
    "if-none-match",
    "range",
    "if-range",
)
_HOST_FIELDS = (*_REQUEST_FIELDS, "host")
_RESPONSE_FIELDS = (
    "cache-control",
    "set-cookie",
    "vary",
    "expires",
    "date",
    "age",
    "last-modified",
    "etag",
)
_SHARED_ANYWAY = ("public", "s-maxage", "must-revalidate")  # RFC 9111 section 3.5
# Hop-by-hop fields (RFC 9110 section 7.6.1) and those RFC 9111 section 3.1 says not to
# store; Age is recomputed on every hit.
_UNSTORED_FIELDS = frozenset(
    {
        b"age",
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NO_CONTENT_STATUSES = frozenset({204, 304})
# A stale entry with validators is kept at least this long for revalidation (seconds).
_REVALIDATION_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a response may be stored (``reason`` is None), and if so how."""

    reason: str | None
    lifetime: float = 0.0
    stored_at: float = 0.0
    vary: tuple[str, ...] = ()
    for_authorized: bool = False
    for_cookies: bool = False
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    tags: tuple[str, ...] = ()
    no_cache: bool = False

    @property
    def storable(self) -> bool:
        return self.reason is None

    def __repr__(self) -> str:
        if self.reason is not None:
            return f"Decision(not stored: {self.reason})"
        return f"Decision(store for {self.lifetime:g}s, vary={self.vary})"


class Rules:
    """The cache-wide options of the policy; see the module docstring for the rules.

    * ``statuses``: the response statuses that may be stored (:data:`DEFAULT_STATUSES`).
    * ``allowed_hosts``: None (any well-formed Host) or a list of host names: exact names
      (``"example.com"``), ``".example.com"`` for the domain and its subdomains, ``"*"``
      for any. A request for another host passes through uncached.
    * ``max_vary_fields``: a response varying on more request fields is not stored.
    * ``max_vary_bytes``: a request whose values of the varying fields are larger is not
      cached (bounds the work and the key).
    * ``add_etag``: give stored responses without an ETag a strong one (from the body).
    * ``strict``: the shared-cache mode for use in front of an origin: a response is stored
      only for the freshness it grants (``s-maxage``, ``max-age``, ``Expires``) or, when
      it grants none, for a heuristic share (``heuristic_fraction`` of the time since its
      ``Last-Modified``, at most ``max_heuristic`` seconds, RFC 9111 section 4.2.2);
      without either it is not stored, and route ttls play no part. The default,
      application mode, stores what the routes declare for their ttl, which the response's
      own freshness can only shorten.
    * ``targeted``: RFC 9213 targeted fields, in order of precedence; the first one a
      response carries replaces ``Cache-Control`` for this cache. Default:
      ``("CDN-Cache-Control",)`` in strict mode, none otherwise.
    * ``stale_while_revalidate`` / ``stale_if_error``: seconds a stale response may still be
      served while it is refreshed in the background / when the application fails, for
      responses that do not grant their own (RFC 5861).
    * ``tag_field``: the response field naming a response's tags, space-separated
      (``Surrogate-Key`` by default; None: no tags). It is never stored nor sent on: tags
      are for purging (:meth:`~chorde.http.ResponseCache.purge_tags`). A response naming
      more than ``max_tags`` tags is not stored.
    """

    __slots__ = (
        "_exact_hosts",
        "_fields",
        "_suffixes",
        "add_etag",
        "heuristic_fraction",
        "max_heuristic",
        "max_tags",
        "max_vary_bytes",
        "max_vary_fields",
        "stale_if_error",
        "stale_while_revalidate",
        "statuses",
        "strict",
        "tag_field",
        "targeted",
    )

    def __init__(
        self,
        *,
        statuses: Iterable[int] = DEFAULT_STATUSES,
        allowed_hosts: Iterable[str] | None = None,
        max_vary_fields: int = DEFAULT_MAX_VARY_FIELDS,
        max_vary_bytes: int = DEFAULT_MAX_VARY_BYTES,
        add_etag: bool = True,
        strict: bool = False,
        targeted: Iterable[str] | None = None,
        heuristic_fraction: float = 0.1,
        max_heuristic: float = 86400.0,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        tag_field: str | None = "Surrogate-Key",
        max_tags: int = 64,
    ) -> None:
        self.statuses = _statuses(statuses)
        self._exact_hosts, self._suffixes = _hosts(allowed_hosts)
        self.max_vary_fields = _count(max_vary_fields, "max_vary_fields")
        self.max_vary_bytes = _count(max_vary_bytes, "max_vary_bytes")
        for option, flag in (("add_etag", add_etag), ("strict", strict)):
            if not isinstance(flag, bool):
                raise TypeError(f"{option} must be True or False, got {flag!r}")
        self.add_etag = add_etag
        self.strict = strict
        if targeted is None:
            targeted = ("cdn-cache-control",) if strict else ()
        self.targeted = tuple(n.lower() for n in _names(targeted, "targeted", _FIELD_NAME))
        self.heuristic_fraction = _seconds(heuristic_fraction, "heuristic_fraction")
        if self.heuristic_fraction > 1:
            raise ValueError(f"heuristic_fraction must be at most 1, got {heuristic_fraction!r}")
        self.max_heuristic = _seconds(max_heuristic, "max_heuristic")
        self.stale_while_revalidate = _seconds(stale_while_revalidate, "stale_while_revalidate")
        self.stale_if_error = _seconds(stale_if_error, "stale_if_error")
        if tag_field is not None and (
            not isinstance(tag_field, str) or not _FIELD_NAME.fullmatch(tag_field)
        ):
            raise ValueError(f"tag_field must be a field name or None, got {tag_field!r}")
        self.tag_field = None if tag_field is None else tag_field.lower()
        self.max_tags = _count(max_tags, "max_tags")
        tags = () if self.tag_field is None else (self.tag_field,)
        self._fields = (*_RESPONSE_FIELDS, *self.targeted, *tags)

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` (normalised, with or without port) is one the cache serves."""
        if self._exact_hosts is None:
            return True
        name = host_name(host)
        if name in self._exact_hosts or host in self._exact_hosts:
            return True
        return any(name == s[1:] or name.endswith(s) for s in self._suffixes)

    # ---- requests ---------------------------------------------------------------------

    def request(
        self,
        *,
        method: str,
        scheme: str,
        hosts: Sequence[str] | None,
        path: str,
        query: str,
        headers: Headers,
        route: Route = DEFAULT_ROUTE,
        namespace: Hashable = "",
        target: Hashable = None,
    ) -> CacheRequest:
        """What the cache makes of a request; ``bypass`` says when it must not be used.

        ``hosts`` are the request's Host values as the framework saw them (every line;
        a framework that joins repeated lines with commas passes its one joined value),
        or None to read every Host line from ``headers``.
        ``target`` replaces path and query in the key when the route keys on something of
        its own. ``namespace`` keeps several caches sharing a client apart.
        """
        req = CacheRequest(route, headers, self.max_vary_bytes)
        if method not in ("GET", "HEAD"):
            req.bypass = f"method {method}"
            return req
        req.head = method == "HEAD"
        # A lookup reads each field where the framework indexes them; pairs are read once.
        lines = (
            headers
            if callable(headers)
            else collect(
                headers, _REQUEST_FIELDS if hosts is not None else _HOST_FIELDS
            ).__getitem__
        )
        if hosts is None:
            hosts = lines("host")
        host = normalise_host(hosts)
        if host is None:
            req.bypass = f"Host {list(hosts)!r} is absent, repeated or malformed"
            return req
        if self._exact_hosts is not None and not self.host_allowed(host):
            req.bypass = f"Host {host!r} is not an allowed host"
            return req
        cc_lines = lines("cache-control")
        if cc_lines:
            cc = parse_cache_control(cc_lines)
            if cc is None:
                req.bypass = "the request's Cache-Control cannot be parsed"
                return req
            if "no-store" in cc:  # RFC 9111 section 5.2.1.5
                req.bypass = "the request says no-store"
                return req
            req.cc = cc
        req.authorized = bool(lines("authorization"))
        req.cookie_lines = lines("cookie")
        inm = lines("if-none-match")
        req.if_none_match = ", ".join(inm) if inm else None
        ranges = lines("range")
        if len(ranges) == 1:
            if_range = lines("if-range")
            if len(if_range) <= 1:  # (more than one: a condition that cannot hold, the whole)
                req.range = ranges[0]
                req.if_range = if_range[0] if if_range else None
        if target is None:
            target = (path, normalise_query(query) if query and route.query else "")
        # HEAD is answered from the GET entry (RFC 9110 section 9.3.2): the key says GET.
        req.key = ("chorde.http", namespace, "GET", scheme.lower(), host, target)
        if route.keyed_on and req.variant(route.keyed_on) is None:
            req.bypass = "the request's values of the fields the route varies on are too large"
        return req

    # ---- responses --------------------------------------------------------------------

    def decide(
        self,
        req: CacheRequest,
        status: int,
        headers: Headers,
        *,
        now: float,
        ttl: float,
        veto: str | None = None,
        requested_at: float | None = None,
    ) -> Decision:
        """Whether the response to ``req`` may be stored, and for how long.

        ``now`` is when the response arrived, ``requested_at`` when the request was sent
        (default ``now``): together they date the response (RFC 9111 section 4.2.3).
        ``veto`` is the adapter's own reason not to store (a streamed body, a session the
        view read ...). ``ttl`` is the route's ttl (or the cache's default); strict mode
        does not use it.
        """
        if req.bypass is not None:
            return Decision(req.bypass)
        if req.head:
            return Decision("a HEAD response has no body to store")
        if veto is not None:
            return Decision(veto)
        if status not in self.statuses and not (self.strict and _FINAL(status)):
            return Decision(f"status {status} is not cacheable")
        found = collect(headers, self._fields)
        if found["set-cookie"]:
            return Decision("the response sets a cookie")
        directives = found["cache-control"]
        for name in self.targeted:  # RFC 9213 section 2.2: the first targeted field wins
            if found[name]:
                directives = found[name]
                break
        cc = parse_cache_control(directives) if directives else EMPTY_CACHE_CONTROL
        if cc is None:
            return Decision("the response's Cache-Control cannot be parsed")
        route = req.route
        shared = not route.per_user
        # RFC 9111 sections 5.2.2.5 (no-store), 5.2.2.4 (no-cache), 5.2.2.7 (private).
        if "no-store" in cc:
            return Decision("the response says no-store")
        no_cache = "no-cache" in cc  # stored only to be revalidated on every use
        if no_cache and not (found["etag"] or found["last-modified"]):
            return Decision("the response says no-cache and has no validator")
        if "private" in cc and shared:
            return Decision("the response says private")
        declared_public = route.public or "public" in cc
        for_authorized = not shared or route.public or any(d in cc for d in _SHARED_ANYWAY)
        if req.authorized and not for_authorized:
            return Decision("the request carries Authorization")  # RFC 9111 section 3.5
        vary = parse_vary(found["vary"], self.max_vary_fields) if found["vary"] else ()
        if vary is None:
            return Decision("the response's Vary is '*', unparsable or too long")
        names = tuple(sorted(set(vary).union(route.keyed_on))) if route.keyed_on else vary
        for_cookies = not shared or declared_public or bool(route.cookies) or "cookie" in names
        if req.cookie_lines and not for_cookies:
            return Decision("the request carries cookies")
        if req.variant(names) is None:
            return Decision("the request's values of the varying fields are too large")
        age = corrected_initial_age(
            found["age"], found["date"], now if requested_at is None else requested_at, now
        )
        if age is None:
            return Decision("the response's Age cannot be parsed")  # RFC 9111 section 5.1
        lifetime = explicit_lifetime(cc, found["expires"], found["date"], shared, now)
        if self.strict:
            if lifetime is None and (status in self.statuses or declared_public):
                lifetime = heuristic_lifetime(
                    found["last-modified"],
                    found["date"],
                    now,
                    self.heuristic_fraction,
                    self.max_heuristic,
                )
            if lifetime is None:
                return Decision("the response grants no freshness (strict mode)")
        else:
            lifetime = ttl if lifetime is None else min(ttl, lifetime)
        if lifetime - age <= 0:
            return Decision("the response is not fresh")
        tags: tuple[str, ...] = ()
        if self.tag_field is not None and found[self.tag_field]:
            tags = tuple(dict.fromkeys(t for line in found[self.tag_field] for t in line.split()))
            if len(tags) > self.max_tags:
                return Decision(f"the response names more than {self.max_tags} tags")
        swr, sie = stale_extensions(cc)
        revalidate = "must-revalidate" in cc or (shared and "proxy-revalidate" in cc)
        return Decision(
            None,
            lifetime=lifetime,
            stored_at=now - age,
            vary=names,
            for_authorized=for_authorized,
            for_cookies=for_cookies,
            stale_while_revalidate=0.0 if revalidate else swr or self.stale_while_revalidate,
            stale_if_error=0.0 if revalidate else sie or self.stale_if_error,
            tags=tags,
            no_cache=no_cache,
        )

    def entry(
        self, req: CacheRequest, decision: Decision, status: int, headers: FieldPairs, body: bytes
    ) -> StoredResponse:
        """The entry to store for a response ``decide`` allowed."""
        kept: list[tuple[bytes, bytes]] = []
        etag: bytes | None = None
        validators: list[tuple[bytes, bytes]] = []
        tag_field = self.tag_field.encode() if self.tag_field is not None else None
        has_length = False
        for name, value in headers:
            raw_name = (name if isinstance(name, bytes) else name.encode("latin-1")).lower()
            if raw_name in _UNSTORED_FIELDS:
                continue
            if raw_name == tag_field:
                continue  # tags are the cache's, not the client's
            raw_value = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
            if raw_name == b"etag":
                etag = raw_value
                validators.append((b"if-none-match", raw_value))
            elif raw_name == b"last-modified":
                validators.append((b"if-modified-since", raw_value))
            elif raw_name == b"content-length":
                has_length = True
            kept.append((raw_name, raw_value))
        if etag is None and self.add_etag:
            etag = strong_etag(body).encode("latin-1")
            kept.append((b"etag", etag))
        # A streamed body came without a length; the stored one is sent in one piece.
        if not has_length and status not in _NO_CONTENT_STATUSES:
            kept.append((b"content-length", b"%d" % len(body)))
        return StoredResponse(
            status=status,
            headers=tuple(kept),
            body=body,
            stored_at=decision.stored_at,
            lifetime=decision.lifetime,
            for_authorized=decision.for_authorized,
            for_cookies=decision.for_cookies,
            vary=decision.vary,
            variant=req.variant(decision.vary) or "",
            etag=etag,
            stale_while_revalidate=decision.stale_while_revalidate,
            stale_if_error=decision.stale_if_error,
            validators=tuple(validators),
            tags=tuple((tag, 0) for tag in decision.tags),
            no_cache=decision.no_cache,
        )

    def private_fields(self, headers: FieldPairs) -> list[Any]:
        """``headers`` without the fields that are the cache's own (the tag field), for a
        response the cache passes on without storing it."""
        if self.tag_field is None:
            return list(headers)
        name = self.tag_field
        return [
            (k, v)
            for k, v in headers
            if (k.decode("latin-1") if isinstance(k, bytes) else k).lower() != name
        ]

    def keep(self, entry: StoredResponse, now: float) -> float:
        """How long a client should hold ``entry``: while fresh, and after that while it can
        still serve (RFC 5861 windows) or be revalidated (another lifetime, at least a
        minute: a short-lived page with validators is worth revalidating, not refetching)."""
        left = entry.lifetime - (now - entry.stored_at)
        revalidation = max(entry.lifetime, _REVALIDATION_WINDOW) if entry.validators else 0.0
        return left + max(entry.stale_while_revalidate, entry.stale_if_error, revalidation)

    def freshen(
        self,
        req: CacheRequest,
        entry: StoredResponse,
        headers: FieldPairs,
        *,
        now: float,
        ttl: float,
        requested_at: float | None = None,
    ) -> StoredResponse | None:
        """``entry`` updated by the fields of a ``304 Not Modified`` that revalidated it
        (RFC 9111 sections 3.2 and 4.3.4): its body kept, its fields replaced by the 304's
        (but Content-Length), its freshness taken anew. None when the freshened response
        may not be stored any more (the 304 said ``no-store``, say)."""
        update: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            raw_name = (name if isinstance(name, bytes) else name.encode("latin-1")).lower()
            if raw_name in _UNSTORED_FIELDS or raw_name == b"content-length":
                continue
            raw_value = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
            update.setdefault(raw_name, []).append(raw_value)
        merged = [(k, v) for k, v in entry.headers if k not in update]
        merged += [(k, v) for k, values in update.items() for v in values]
        decision = self.decide(
            req, entry.status, merged, now=now, ttl=ttl, requested_at=requested_at
        )
        if not decision.storable:
            return None
        return self.entry(req, decision, entry.status, merged, entry.body)


def _statuses(statuses: Iterable[int]) -> frozenset[int]:
    try:
        result = frozenset(statuses)
    except TypeError:
        raise TypeError(f"statuses must be a collection of ints, got {statuses!r}") from None
    for status in result:
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status < 600:
            raise ValueError(f"statuses must be final HTTP statuses, got {status!r}")
    if 304 in result or 206 in result:
        raise ValueError("statuses cannot include 206 or 304: the cache stores full responses")
    return result


def _hosts(hosts: Iterable[str] | None) -> tuple[frozenset[str] | None, tuple[str, ...]]:
    if hosts is None:
        return None, ()
    if isinstance(hosts, str | bytes):
        raise TypeError(f"allowed_hosts must be a list of host names, got {hosts!r}")
    exact: set[str] = set()
    suffixes: list[str] = []
    for host in hosts:
        if not isinstance(host, str) or not host or any(c.isspace() for c in host):
            raise ValueError(f"allowed_hosts: {host!r} is not a host name")
        host = host.lower()
        if host == "*":
            return None, ()
        if host.startswith("."):
            suffixes.append(host)
        else:
            exact.add(host)
    return frozenset(exact), tuple(suffixes)


def _FINAL(status: int) -> bool:
    """A final status a strict cache may store with explicit freshness (RFC 9111 section 3):
    not 206 (ranges are not stored) nor 304 (it completes a stored response)."""
    return 200 <= status < 600 and status not in (206, 304)


def _seconds(value: Any, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{option} must be a number >= 0, got {value!r}")
    if value == float("inf"):
        raise ValueError(f"{option} must be finite, got {value!r}")
    return float(value)


def _count(value: Any, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{option} must be a positive int, got {value!r}")
    return value
