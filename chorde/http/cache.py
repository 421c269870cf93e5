"""An HTTP response cache over a chorde client: the lookup, store and serve flows, written once.

Each flow is a generator that yields what it needs done (``("get", key)``,
``("put", key, value, ttl)``, ``("wait", flight)``, ``("render",)``) and is driven either by
the blocking driver (:meth:`ResponseCache.serve`, for WSGI views) or by the asyncio driver
(:meth:`ResponseCache.aserve`, for coroutine views and ASGI), so the policy and the order of
cache operations exist once. The lookup and serve flows go on from their first read (the
request's key) in plain code that returns the result when no more cache calls are needed:
the drivers make that read themselves, so a hit runs no generator. Cache faults never reach
the response: a failing client is logged and treated as a miss.

Every route counts how its requests were answered (:meth:`ResponseCache.route_info`, and
:func:`chorde.observe.snapshot` for exporters), and the hooks of :mod:`chorde.observe` get
an event per request answered through the cache (scope ``route``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import numbers
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Hashable, Iterable, Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from chorde import observe
from chorde._compute import Flight, Flights
from chorde.clients.base import BaseCacheClient
from chorde.http.answers import Reply, reply
from chorde.http.entry import StoredResponse, vary_marker, vary_marker_names, vary_marker_until
from chorde.http.request import FRESH, STALE_WHILE_REVALIDATE, CacheRequest, FieldPairs
from chorde.http.route import DEFAULT_ROUTE, Route, check_wait_timeout
from chorde.http.rules import Rules
from chorde.http.status import FIELD, cache_status, check_name
from chorde.observe import ERROR, HIT, MISS, REFRESH, ROUTE, STALE, CacheInfo, Counters
from chorde.tags import bump_steps, check_tags, revisions_steps, tag_key

__all__ = ["ARender", "Conditions", "Outcome", "Render", "Rendered", "Reply", "ResponseCache"]

logger = logging.getLogger("chorde.http")

Step = tuple[Any, ...]
Steps = Generator[Step, Any, Any]


class Rendered(NamedTuple):
    """What an adapter's render step returns: the response, as the policy needs to see it."""

    status: int
    headers: FieldPairs
    #: The complete body, or None when there is none to store (a stream ...).
    body: bytes | None
    #: The adapter's own reason not to store this response (None: no objection).
    veto: str | None
    #: The framework's response object, handed back in :attr:`Outcome.rendered`.
    native: Any = None


class Outcome(NamedTuple):
    """How a request was answered by :meth:`ResponseCache.serve`."""

    #: The cache's answer (a hit, a 304, a 504, another request's render); None when the
    #: adapter's own render is the answer.
    reply: Reply | None
    #: What the render step returned (None when nothing was rendered).
    rendered: Rendered | None
    #: The entry stored from that render, if any (``reply`` is then answered from it).
    entry: StoredResponse | None
    #: The ``Cache-Status`` field for an answer the adapter renders itself (None when the
    #: option is off, or when ``reply`` is the answer: it carries its own).
    status: tuple[bytes, bytes] | None = None
    #: True when the adapter's own rendered response may be sent as it is (``reply``, if
    #: any, is then the same response as stored); False when ``reply`` is the answer.
    own: bool = False
    #: A stale entry served while it may be refreshed (RFC 5861): the adapter refreshes it
    #: in the background with :meth:`ResponseCache.refresh_steps`.
    refresh: StoredResponse | None = None
    #: How the cache answered, for the route's counters and the hooks
    #: (:data:`chorde.observe.HIT`, ``MISS``, ``STALE``); None: it took no part (a bypass).
    kind: str | None = None

    @property
    def hit(self) -> bool:
        """True when the cache answered without rendering."""
        return self.rendered is None and self.reply is not None


#: Steps that look an entry up / answer a request.
Looking = Generator[Step, Any, StoredResponse | None]
Serving = Generator[Step, Any, Outcome]

# A fresh hit's Outcome past its reply, built without NamedTuple's keyword handling.
_HIT_FIELDS = (None, None, None, False, None, HIT)
_new = tuple.__new__

#: An adapter's render step: ``render(conditions)`` calls the application with
#: ``conditions`` (the cache's ``If-None-Match``/``If-Modified-Since`` fields, when it
#: revalidates) in place of the request's own conditional fields, and returns the response.
Conditions = tuple[tuple[bytes, bytes], ...]
Render = Callable[[Conditions], Rendered]
ARender = Callable[[Conditions], Awaitable[Rendered]]


class ResponseCache:
    """An HTTP response cache: :class:`~chorde.http.rules.Rules` applied over a chorde client.

    * ``client``: where responses live (any chorde client; entries are plain tuples).
    * ``rules``: the cache-wide policy options (default :class:`Rules` ()).
    * ``ttl``: seconds a response is kept when its route names no ttl (default 60).
    * ``clock``: the wall clock entries are dated by; processes sharing a client must agree.
    * ``cache_status``: a name, to add an RFC 9211 ``Cache-Status`` field to answers
      (``cache_status_key=True`` adds the key to it); None (default): no field.
    * ``wait_timeout``: how long concurrent misses of one key wait for the request that
      renders it before rendering their own (0: never wait).
    """

    def __init__(
        self,
        client: BaseCacheClient,
        *,
        rules: Rules | None = None,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.time,
        wait_timeout: float = 30.0,
        cache_status: str | None = None,
        cache_status_key: bool = False,
    ) -> None:
        if not isinstance(client, BaseCacheClient):
            raise TypeError(f"client must be a chorde cache client, got {client!r}")
        if rules is not None and not isinstance(rules, Rules):
            raise TypeError(f"rules must be a chorde.http.Rules, got {rules!r}")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.client = client
        self.rules = rules if rules is not None else Rules()
        self.ttl = _seconds(ttl, "ttl", positive=True)
        self.clock = clock
        self.wait_timeout = check_wait_timeout(wait_timeout)
        self.flights = Flights()
        self.cache_status = None if cache_status is None else check_name(cache_status)
        self.cache_status_key = bool(cache_status_key)
        #: What the cache makes of a request: :meth:`Rules.request`.
        self.request = self.rules.request
        self._routes: dict[str, Counters] = {}
        # Awaited reads in flight, by (key, writes, loop): the futures of the callers that
        # came while one was under way (see _aread). ``_writes`` counts writes begun here,
        # by either driver.
        self._reads: dict[tuple[Hashable, int, asyncio.AbstractEventLoop], list[Any]] = {}
        self._writes = 0
        observe.register(self)

    def url_key(self, url: str, *, namespace: Hashable = "", route: Route = DEFAULT_ROUTE) -> Any:
        """The key a GET of the absolute ``url`` is stored under (for purging it)."""
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"{url!r} is not an absolute URL (http://host/path?query)")
        req = self.request(
            method="GET",
            scheme=parts.scheme,
            hosts=[parts.netloc],
            path=parts.path or "/",
            query=parts.query,
            headers=[],
            route=route,
            namespace=namespace,
        )
        if req.bypass is not None:
            raise ValueError(f"{url!r} is not cached: {req.bypass}")
        return req.key

    def decide(
        self, req: CacheRequest, rendered: Rendered, now: float, requested_at: float | None = None
    ) -> StoredResponse | None:
        """The entry to store for a rendered response, or None (the reason is logged)."""
        ttl = req.route.ttl or self.ttl
        veto = rendered.veto if rendered.body is not None else rendered.veto or "no body"
        decision = self.rules.decide(
            req,
            rendered.status,
            rendered.headers,
            now=now,
            ttl=ttl,
            veto=veto,
            requested_at=requested_at,
        )
        if decision.reason is not None:
            logger.debug("not stored %r: %s", req.key, decision.reason)
            return None
        assert rendered.body is not None
        return self.rules.entry(req, decision, rendered.status, rendered.headers, rendered.body)

    def reply(
        self,
        req: CacheRequest,
        entry: StoredResponse,
        *,
        hit: bool,
        fwd: str | None = None,
        fwd_status: int | None = None,
        stored: bool | None = None,
    ) -> Reply:
        """The answer to ``req`` from ``entry`` (Age on hits, 304 when If-None-Match matches,
        a byte range when asked for), with its ``Cache-Status`` when the option is on:
        ``fwd`` says why the cache went forward when it did."""
        answer = reply(req, entry, self.clock(), hit=hit)
        if self.cache_status is not None:  # (asked first: the field is off by default)
            field = self.status_field(
                req, entry, hit=hit and fwd is None, fwd=fwd, fwd_status=fwd_status, stored=stored
            )
            if field is not None:
                answer.headers.append(field)
        return answer

    def status_field(
        self,
        req: CacheRequest,
        entry: StoredResponse | None,
        *,
        hit: bool = False,
        fwd: str | None = None,
        fwd_status: int | None = None,
        stored: bool | None = None,
    ) -> tuple[bytes, bytes] | None:
        """The ``Cache-Status`` field of an answer (RFC 9211), None when the option is off."""
        if self.cache_status is None:
            return None
        ttl = None
        if entry is not None:
            ttl = entry.lifetime - (self.clock() - entry.stored_at)
        value = cache_status(
            self.cache_status,
            hit=hit,
            fwd=fwd,
            fwd_status=fwd_status,
            stored=stored,
            ttl=ttl,
            key=repr(req.key) if self.cache_status_key else None,
        )
        return (FIELD, value)

    # ---- the flows (generators) ------------------------------------------------------
    #
    # The flows that begin by reading the request's key (lookup, serve) go on from the value
    # read in plain code, which returns the result when it needs no more cache calls (a hit)
    # or else the steps that go on. The drivers make that first read themselves, so a hit
    # runs no generator; lookup_steps and serve_steps are the same flows as steps throughout.

    def lookup_steps(self, req: CacheRequest) -> Generator[Step, Any, StoredResponse | None]:
        """The stored entry that is ``req``'s, fresh or stale (see
        :meth:`CacheRequest.freshness`), or None."""
        found = self._found(req, (yield ("get", req.key, None)))
        if found is None or isinstance(found, StoredResponse):
            return found
        return (yield from found)

    def _found(self, req: CacheRequest, value: Any) -> StoredResponse | Looking | None:
        """What ``value``, read under ``req.key``, holds for ``req``: its entry, None, or
        the steps that find it (the variant a vary marker points to, a tagged entry's tags)."""
        entry = StoredResponse.from_value(value)
        if entry is None:
            names = vary_marker_names(value)
            if names is not None:
                return self._variant_steps(req, names)
        return self._usable(req, entry, False)

    def _variant_steps(self, req: CacheRequest, names: tuple[str, ...]) -> Looking:
        variant = req.variant(names)
        if variant is None:
            return None
        value = yield ("get", (*req.key, names, variant), None)
        found = self._usable(req, StoredResponse.from_value(value), True)
        if found is None or isinstance(found, StoredResponse):
            return found
        return (yield from found)

    def _usable(
        self, req: CacheRequest, entry: StoredResponse | None, varies: bool
    ) -> StoredResponse | Looking | None:
        """``entry`` if it is ``req``'s to answer from (then unless one of its tags was
        purged since it was stored: the steps that check)."""
        if entry is None or not req.usable(entry):
            req.vary_miss = varies  # the resource is stored, not this variant
            return None
        return self._unpurged_steps(entry) if entry.tags else entry

    def _unpurged_steps(self, entry: StoredResponse) -> Looking:
        keys = [tag_key(tag) for tag, _ in entry.tags]
        current = dict((yield ("getMulti", keys, None)) or ())
        if any(current.get(tag_key(tag)) != rev for tag, rev in entry.tags):
            return None
        return entry

    def store_steps(self, req: CacheRequest, entry: StoredResponse) -> Steps:
        """Store ``entry``; one that varies goes under its variant's key.

        The marker naming the varying fields lives as long as the longest-kept variant (and
        in application mode at least the route's ttl): storing a short-lived variant never
        shortens it, so it does not orphan the others.
        """
        if entry.tags:
            entry = entry._replace(tags=(yield from self._tag_revisions(entry.tags)))
        key = req.key
        now = self.clock()
        keep = self.rules.keep(entry, now)
        if entry.vary:
            needed = keep if self.rules.strict else max(keep, req.route.ttl or self.ttl)
            until = max(now + needed, vary_marker_until((yield ("get", key, None))))
            yield ("put", key, vary_marker(entry.vary, until), until - now)
            key = (*key, entry.vary, entry.variant)
        yield ("put", key, entry.to_value(), keep)

    def _tag_revisions(
        self, tags: tuple[tuple[str, int], ...]
    ) -> Generator[Step, Any, tuple[tuple[str, int], ...]]:
        """Each tag's current revision, made (once, atomically) for a tag that has none
        (the records :mod:`chorde.tags` keeps, shared with ``@cached``)."""
        names = [tag for tag, _ in tags]
        revisions = yield from revisions_steps([tag_key(tag) for tag in names])
        return tuple(zip(names, revisions, strict=True))

    def purge_tags_steps(self, tags: Iterable[str]) -> Steps:
        """Make every stored response naming one of ``tags`` read as a miss (a new revision
        per tag: no key scan, and across processes when the client is shared); the
        ``@cached`` results tagged so too (:func:`chorde.tags.invalidate_tags`)."""
        yield from bump_steps(tag_key(tag) for tag in check_tags(tags))

    def serve_steps(self, req: CacheRequest) -> Serving:
        """Answer ``req``: from the cache, from a concurrent render, or by rendering.

        Concurrent misses of one variant wait up to the route's ``wait_timeout`` (else the
        cache's) for the first one's render, and are answered from it when the policy lets
        it answer them; otherwise each renders its own.
        """
        if req.bypass is not None:
            return (yield from _bypass_steps())
        answer = self._serve_found(req, (yield ("get", req.key, None)))
        if isinstance(answer, Outcome):
            return answer
        return (yield from answer)

    def _serve_found(self, req: CacheRequest, value: Any) -> Outcome | Serving:
        """Go on answering ``req`` from ``value``, read under its key: the answer when the
        entry found gives it with no more cache calls, else the steps that go on."""
        stale = self._found(req, value)
        if stale is None or isinstance(stale, StoredResponse):
            return self._answer(req, stale)
        return self._looked_up_steps(req, stale)

    def _looked_up_steps(self, req: CacheRequest, looking: Looking) -> Serving:
        answer = self._answer(req, (yield from looking))
        if isinstance(answer, Outcome):
            return answer
        return (yield from answer)

    def _answer(self, req: CacheRequest, stale: StoredResponse | None) -> Outcome | Serving:
        """The answer from ``req``'s stored entry, if it gives one now (fresh, or stale while
        it is refreshed), else the steps that go forward."""
        if stale is not None:
            verdict = req.freshness(stale, self.clock())
            if verdict == FRESH:
                return _new(Outcome, (self.reply(req, stale, hit=True), *_HIT_FIELDS))
            if verdict == STALE_WHILE_REVALIDATE:  # RFC 5861 section 3
                answer = self.reply(req, stale, hit=True)
                return Outcome(answer, None, None, refresh=stale, kind=STALE)
        return self._forward_steps(req, stale)

    def _forward_steps(self, req: CacheRequest, stale: StoredResponse | None) -> Serving:
        """Answer ``req``, which its stored entry (if any) does not answer as it is: 504 when
        it asks only for the cache, else from a concurrent render, or by rendering."""
        if req.only_if_cached:  # RFC 9111 section 5.2.1.7
            return Outcome(Reply(504, [(b"content-length", b"0")], b""), None, None, kind=MISS)
        wait_timeout = req.route.wait_timeout
        if wait_timeout is None:
            wait_timeout = self.wait_timeout
        flight: Flight | None = None
        if wait_timeout > 0 and self.coalesces(req):
            flight_key = (req.key, req.variant(req.route.keyed_on))
            if req.head:  # a HEAD may wait for a GET's render, but renders nothing to share
                flight, leader = self.flights.get(flight_key), False
            else:
                flight, leader = self.flights.claim(flight_key)
            if leader:
                assert flight is not None
                flight.owner = threading.get_ident()
            elif flight is not None:
                self.route_counters(req.route).coalesced += 1
                shared = yield ("wait", flight, wait_timeout)
                if shared is not None and req.accepts(shared, self.clock()):
                    return Outcome(self.reply(req, shared, hit=True), None, None, kind=MISS)
                flight = None  # the other render is not ours to use: render our own
        entry = None
        try:
            outcome = yield from self._render_steps(req, stale)
            entry = outcome.entry
            return outcome
        finally:
            if flight is not None:
                self.flights.release(flight_key, flight)
                if not flight.done():
                    flight.set_result(entry)

    def _render_steps(
        self, req: CacheRequest, stale: StoredResponse | None
    ) -> Generator[Step, Any, Outcome]:
        """Render (revalidating ``stale`` with its validators), store what may be stored;
        answer from ``stale`` when the application fails within stale-if-error."""
        started = self.clock()
        try:
            rendered = yield ("render", stale.validators if stale is not None else ())
        except Exception:
            self.route_counters(req.route).errors += 1
            if stale is not None and self.serves_on_error(stale):
                logger.warning("serving a stale %r: the application failed", req.key)
                answer = self.reply(req, stale, hit=True, fwd=req.forward_reason(True))
                return Outcome(answer, None, None, kind=STALE)
            raise
        fwd = req.forward_reason(stale is not None)
        if stale is not None and stale.validators and rendered.status == 304:
            entry = self.rules.freshen(  # RFC 9111 section 4.3.4
                req,
                stale,
                rendered.headers,
                now=self.clock(),
                ttl=req.route.ttl or self.ttl,
                requested_at=started,
            )
            if entry is not None:
                yield from self.store_steps(req, entry)
            stored = entry is not None
            answer = self.reply(
                req, entry or stale, hit=True, fwd=fwd, fwd_status=304, stored=stored
            )
            return Outcome(answer, rendered, entry, kind=MISS)
        if rendered.status >= 500 and stale is not None and self.serves_on_error(stale):
            self.route_counters(req.route).errors += 1
            answer = self.reply(req, stale, hit=True, fwd=fwd, fwd_status=rendered.status)
            return Outcome(answer, rendered, None, kind=STALE)
        entry = self.decide(req, rendered, self.clock(), started)
        if entry is not None:
            yield from self.store_steps(req, entry)
            answer = self.reply(req, entry, hit=False, fwd=fwd, stored=True)
            return Outcome(answer, rendered, entry, own=True, kind=MISS)
        field = self.status_field(req, None, fwd=fwd, fwd_status=rendered.status, stored=False)
        return Outcome(None, rendered, None, field, own=True, kind=MISS)

    def refresh_steps(self, req: CacheRequest, stale: StoredResponse) -> Generator[Step, Any, None]:
        """Refresh ``stale`` (served while it is refreshed): one render per key at a time,
        revalidating with its validators; a failure leaves it as it is."""
        flight_key = (req.key, req.variant(req.route.keyed_on))
        flight, leader = self.flights.claim(flight_key)
        if not leader:
            return  # a render of this page is under way already
        flight.owner = threading.get_ident()
        self.route_counters(req.route).refreshes += 1
        entry = None
        try:
            outcome = yield from self._render_steps(req, stale)
            entry = outcome.entry
        except Exception:  # nobody waits for it: the stale entry just stays
            logger.warning("background refresh of %r failed", req.key, exc_info=True)
        finally:
            self.flights.release(flight_key, flight)
            if not flight.done():
                flight.set_result(entry)

    def serves_on_error(self, entry: StoredResponse) -> bool:
        """Whether ``entry``, stale, may answer when the application fails (RFC 5861)."""
        return self.clock() - entry.stored_at - entry.lifetime <= entry.stale_if_error

    @staticmethod
    def coalesces(req: CacheRequest) -> bool:
        """Whether concurrent misses like ``req`` may wait for one render of it."""
        if req.revalidates or req.authorized:
            return False
        route = req.route
        return not req.has_cookies or route.public or route.per_user or bool(route.cookies)

    # ---- what each route's requests got (chorde.observe) --------------------------------

    def route_counters(self, route: Route) -> Counters:
        """The counters of ``route`` (by name; unnamed routes count as ``"default"``)."""
        name = route.name or "default"
        counters = self._routes.get(name)
        if counters is None:
            counters = self._routes.setdefault(name, Counters())
        return counters

    def route_info(self) -> dict[str, CacheInfo]:
        """Each route's counters so far, by route name."""
        return {name: counters.info() for name, counters in list(self._routes.items())}

    def stats_items(self) -> list[tuple[str, str, CacheInfo]]:
        """For :func:`chorde.observe.snapshot`."""
        return [(ROUTE, name, info) for name, info in self.route_info().items()]

    def count(self, req: CacheRequest, kind: str | None, started: float = 0.0) -> None:
        """Count a request the cache answered (``kind``: :data:`chorde.observe.HIT`,
        ``MISS`` or ``STALE``; None: not through the cache) and, ``started`` being its
        :func:`time.perf_counter` when hooks are installed, tell the hooks. The drivers
        call it; an adapter running a flow of its own calls it once per request."""
        if kind is None:
            return
        counters = self._routes.get(req.route.name or "default") or self.route_counters(req.route)
        if kind == HIT:
            counters.hits += 1
        elif kind == STALE:
            counters.stale += 1
        else:
            counters.misses += 1
        if started:
            observe.emit(kind, req.route.name or "default", _clock() - started, ROUTE)

    def _failed(self, req: CacheRequest, started: float) -> None:
        """Count a request whose render raised (and was not answered stale)."""
        if req.bypass is not None:
            return
        self.route_counters(req.route).misses += 1
        if started:
            observe.emit(ERROR, req.route.name or "default", _clock() - started, ROUTE)

    def _refreshed(self, req: CacheRequest, started: float) -> None:
        if started:
            observe.emit(REFRESH, req.route.name or "default", _clock() - started, ROUTE)

    # ---- the blocking driver ------------------------------------------------------------

    def serve(self, req: CacheRequest, render: Render) -> Outcome:
        """Run :meth:`serve_steps` with blocking cache calls; ``render(conditions)`` renders
        (with ``conditions``, the cache's validators, in place of the request's own)."""
        started = _clock() if observe.hooks() else 0.0
        try:
            if req.bypass is None:  # serve_steps' first read, made here (see the flows)
                answer = self._serve_found(req, self._read(req.key))
            else:
                answer = _bypass_steps()
            result = answer if isinstance(answer, Outcome) else self._drive(answer, render)
        except Exception:
            self._failed(req, started)
            raise
        self.count(req, result.kind, started)
        return result

    def refresh(self, req: CacheRequest, stale: StoredResponse, render: Render) -> None:
        """Run :meth:`refresh_steps` with blocking cache calls."""
        started = _clock() if observe.hooks() else 0.0
        self._drive(self.refresh_steps(req, stale), render)
        self._refreshed(req, started)

    def lookup(self, req: CacheRequest) -> StoredResponse | None:
        """Run :meth:`lookup_steps` with blocking cache calls."""
        found = self._found(req, self._read(req.key))
        if found is None or isinstance(found, StoredResponse):
            return found
        result: StoredResponse | None = self._drive(found, None)
        return result

    def store(self, req: CacheRequest, entry: StoredResponse) -> None:
        """Run :meth:`store_steps` with blocking cache calls."""
        self._drive(self.store_steps(req, entry), None)

    def delete(self, key: Hashable) -> None:
        """Drop the entry (or the vary marker, orphaning every variant) under ``key``."""
        self._drive(_delete_steps(key), None)

    def purge_tags(self, *tags: str) -> None:
        """Run :meth:`purge_tags_steps` with blocking cache calls."""
        self._drive(self.purge_tags_steps(tags), None)

    def _drive(self, steps: Steps, render: Render | None) -> Any:
        send = steps.send
        try:
            step = send(None)
            while True:
                kind = step[0]
                if kind == "get":
                    step = send(self._read(step[1]))
                elif kind in _CLIENT_STEPS:
                    if kind in _WRITE_STEPS:  # (awaited reads begun before are not shared)
                        self._writes += 1
                    step = send(self._call(step))
                elif kind == "wait":
                    step = send(self._wait(step[1], step[2]))
                else:  # render: the application's own errors go back through the flow
                    try:
                        rendered = render(step[1])  # type: ignore[misc]  # a flow that renders has one
                    except BaseException as exc:
                        error = exc
                    else:
                        step = send(rendered)
                        continue
                    step = steps.throw(error)
        except StopIteration as stop:
            return stop.value
        except BaseException:
            steps.close()  # (a flow that raised or returned is closed already)
            raise

    def _read(self, key: Hashable) -> Any:
        """``get(key)`` (the read every lookup begins with, the async driver's _aread)."""
        try:
            return self.client.get(key, None)
        except Exception:  # a broken cache must not break the response
            logger.warning("cache lookup failed for %r", key, exc_info=True)
            return None

    def _call(self, step: Step) -> Any:
        name = step[0]
        try:
            value = getattr(self.client, name)(*step[1:])
        except Exception:  # a broken cache must not break the response
            what = _CLIENT_STEPS[name]
            logger.warning("cache %s failed for %r", what, step[1], exc_info=True)
            return None
        return _listed(value) if name == "getMulti" else value

    def _wait(self, flight: Flight, timeout: float) -> StoredResponse | None:
        if flight.owner == threading.get_ident():
            return None  # the render asked for its own page: waiting would deadlock
        try:
            result: StoredResponse | None = flight.result(timeout)
        except (TimeoutError, concurrent.futures.CancelledError):
            return None
        return result

    # ---- the asyncio driver -------------------------------------------------------------

    async def aserve(self, req: CacheRequest, render: ARender) -> Outcome:
        """Run :meth:`serve_steps` with the client's awaitables; ``await render(conditions)``
        renders."""
        started = _clock() if observe.hooks() else 0.0
        try:
            if req.bypass is None:  # serve_steps' first read, made here (see the flows)
                answer = self._serve_found(req, await self._aread(req.key))
            else:
                answer = _bypass_steps()
            if isinstance(answer, Outcome):
                result = answer
            else:
                result = await self._adrive(answer, render)
        except Exception:
            self._failed(req, started)
            raise
        self.count(req, result.kind, started)
        return result

    async def arefresh(self, req: CacheRequest, stale: StoredResponse, render: ARender) -> None:
        """Run :meth:`refresh_steps` with the client's awaitables."""
        started = _clock() if observe.hooks() else 0.0
        await self._adrive(self.refresh_steps(req, stale), render)
        self._refreshed(req, started)

    async def alookup(self, req: CacheRequest) -> StoredResponse | None:
        """Run :meth:`lookup_steps` with the client's awaitables."""
        found = self._found(req, await self._aread(req.key))
        if found is None or isinstance(found, StoredResponse):
            return found
        result: StoredResponse | None = await self._adrive(found, None)
        return result

    async def astore(self, req: CacheRequest, entry: StoredResponse) -> None:
        """Run :meth:`store_steps` with the client's awaitables."""
        await self._adrive(self.store_steps(req, entry), None)

    async def adelete(self, key: Hashable) -> None:
        """Awaitable :meth:`delete`."""
        await self._adrive(_delete_steps(key), None)

    async def apurge_tags(self, *tags: str) -> None:
        """Awaitable :meth:`purge_tags`."""
        await self._adrive(self.purge_tags_steps(tags), None)

    async def _adrive(self, steps: Steps, render: ARender | None) -> Any:
        send = steps.send
        try:
            step = send(None)
            while True:
                kind = step[0]
                if kind == "get":
                    step = send(await self._aread(step[1]))
                elif kind in _CLIENT_STEPS:
                    if kind in _WRITE_STEPS:
                        self._writes += 1
                    step = send(await self._acall(step))
                elif kind == "wait":
                    step = send(await self._await(step[1], step[2]))
                else:
                    try:
                        rendered = await render(step[1])  # type: ignore[misc]  # a flow that renders has one
                    except BaseException as exc:
                        error = exc
                    else:
                        step = send(rendered)
                        continue
                    step = steps.throw(error)
        except StopIteration as stop:
            return stop.value
        except BaseException:
            steps.close()
            raise

    async def _aread(self, key: Hashable) -> Any:
        """``aget(key)``, shared: a caller that comes while a read of ``key`` begun after
        this process's last write through this cache is under way (on the same event loop)
        gets that read's answer instead of making its own round trip. A hot page's
        concurrent hits then cost the server one read, not one each."""
        tag = (key, self._writes, asyncio.get_running_loop())
        reads = self._reads
        waiters = reads.get(tag)
        if waiters is not None:
            mine = tag[2].create_future()
            waiters.append(mine)
            value = await mine
            if value is not _AGAIN:
                return value
            return await self._acall(("get", key, None))  # (the read shared was cancelled)
        reads[tag] = waiters = []
        value = _AGAIN
        try:
            value = await self._acall(("get", key, None))
            return value
        finally:
            if reads.get(tag) is waiters:
                del reads[tag]
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(value)

    async def _acall(self, step: Step) -> Any:
        name = step[0]
        try:
            return await getattr(self.client, "a" + name)(*step[1:])
        except Exception:  # a broken cache must not break the response
            what = _CLIENT_STEPS[name]
            logger.warning("cache %s failed for %r", what, step[1], exc_info=True)
            return None

    async def _await(self, flight: Flight, timeout: float) -> StoredResponse | None:
        # shield: a waiter that gives up must not cancel the flight the others wait on.
        waiting = asyncio.shield(asyncio.wrap_future(flight))
        try:
            result: StoredResponse | None = await asyncio.wait_for(waiting, timeout)
        except TimeoutError:
            return None
        return result


#: The client methods a flow may call (a failing call is logged as this, and reads None).
_CLIENT_STEPS = {
    "get": "lookup",
    "getMulti": "lookup",
    "put": "store",
    "add": "store",
    "delete": "invalidation",
}


#: The steps that change what reads answer: a read begun before one is not shared after it.
_WRITE_STEPS = frozenset({"put", "add", "delete"})
#: What waiters of a shared read get when it was cancelled: read again.
_AGAIN: Any = object()

_clock = time.perf_counter


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, Iterator) else value


def _bypass_steps() -> Serving:
    """A request the cache may not answer: the application renders it."""
    rendered = yield ("render", ())
    return Outcome(None, rendered, None, own=True)


def _delete_steps(key: Hashable) -> Steps:
    yield ("delete", key)


def _seconds(value: Any, option: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{option} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{option} must be {bound} seconds, got {value!r}")
    return seconds
