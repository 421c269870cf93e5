"""The response side of one forwarded request: hold, decide, store, pass through.

:class:`_Responder` wraps the ASGI ``send`` of a request the cache forwards to the
application. It holds the response start until the policy has decided, stores a complete
body before its last byte leaves, lets streams pass while keeping a copy, freshens a stale
entry on a ``304`` to its revalidation, and answers from a stale entry when the
application answers 5xx within the entry's ``stale-if-error`` window.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from starlette.types import Message, Send

from chorde.http import CacheRequest, Decision, StoredResponse

if TYPE_CHECKING:
    from chorde_starlette.middleware import CacheMiddleware

__all__: list[str] = []  # internal module

logger = logging.getLogger("chorde.starlette")


class _Responder:
    """Wraps ``send`` for one forwarded request: decides, passes through, keeps a copy."""

    __slots__ = (
        "_buffer",
        "_decision",
        "_future",
        "_middleware",
        "_request",
        "_requested_at",
        "_send",
        "_size",
        "_stale",
        "_start",
        "_state",
        "entry",
        "started",
    )

    # states: waiting for the start; holding the start; streaming with a copy; passing;
    # dropping what the application sends (the client was answered from the cache).
    _WAIT, _HOLD, _COPY, _PASS, _DROP = range(5)

    def __init__(
        self,
        middleware: CacheMiddleware,
        send: Send,
        request: CacheRequest,
        future: asyncio.Future[StoredResponse | None] | None,
        stale: StoredResponse | None = None,
    ) -> None:
        self._middleware = middleware
        self._send = send
        self._request = request
        self._future = future
        self._stale = stale
        self._requested_at = middleware.cache.clock()
        self._state = self._WAIT
        self._start: Message | None = None
        self._decision: Decision | None = None
        self._buffer: list[bytes] = []
        self._size = 0
        self.entry: StoredResponse | None = None
        #: Whether the application has sent anything (its answer may then not be replaced).
        self.started = False

    @property
    def _fwd(self) -> str:
        return self._request.forward_reason(self._stale is not None)

    def _resolve(self, entry: StoredResponse | None) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(entry)

    def abandon(self) -> None:
        """Give up storing (the app finished or failed): waiters go to the app themselves."""
        if self.entry is None:
            self._resolve(None)

    async def flush(self) -> None:
        """Send a start still held when the app returned without a final body."""
        if self._state == self._HOLD and self._start is not None:
            self._state = self._PASS
            await self._send(self._start)

    def _with_status(self, message: Message, stored: bool) -> Message:
        """The application's start message as it leaves: the cache's own fields (tags)
        removed, its Cache-Status added."""
        cache = self._middleware.cache
        headers = cache.rules.private_fields(message.get("headers", ()))
        field = self._middleware.status_field(
            self._request, self.entry, fwd=self._fwd, fwd_status=message["status"], stored=stored
        )
        if field is not None:
            headers.append(field)
        return {**message, "headers": headers}

    async def _give_up(self) -> None:
        held = self._state == self._HOLD
        self._state = self._PASS
        self._buffer = []
        self._resolve(None)
        if held and self._start is not None:
            await self._send(self._with_status(self._start, stored=False))

    def _store_entry(self, body: bytes) -> StoredResponse:
        start, decision = self._start, self._decision
        assert start is not None and decision is not None
        rules = self._middleware.cache.rules
        entry = rules.entry(self._request, decision, start["status"], start["headers"], body)
        self.entry = entry
        return entry

    async def _answer_from_stale(self, message: Message) -> bool:
        """Answer a 304 to our revalidation, or a 5xx within stale-if-error, from the stale
        entry; True when the client has been answered (the app's answer is then dropped)."""
        stale = self._stale
        if stale is None:
            return False
        mw = self._middleware
        cache = mw.cache
        status = message["status"]
        if status == 304 and stale.validators:  # RFC 9111 section 4.3.4
            entry = cache.rules.freshen(
                self._request,
                stale,
                message.get("headers", ()),
                now=cache.clock(),
                ttl=self._request.route.ttl or cache.ttl,
                requested_at=self._requested_at,
            )
            self._state = self._DROP
            if entry is not None:
                self.entry = entry
                self._resolve(entry)
                await cache.astore(self._request, entry)
            await mw._send_reply(
                self._send,
                self._request,
                entry or stale,
                hit=True,
                fwd=self._fwd,
                fwd_status=304,
                stored=entry is not None,
            )
            return True
        if status >= 500 and cache.serves_on_error(stale):  # RFC 5861 section 4
            logger.warning(
                "serving a stale %r: the application answered %d", self._request.key, status
            )
            self._state = self._DROP
            await mw._send_reply(
                self._send, self._request, stale, hit=True, fwd=self._fwd, fwd_status=status
            )
            return True
        return False

    async def send(self, message: Message) -> None:
        state = self._state
        if state == self._PASS:
            await self._send(message)
            return
        if state == self._DROP:
            return
        kind = message["type"]
        cache = self._middleware.cache
        if kind == "http.response.start" and state == self._WAIT:
            if await self._answer_from_stale(message):
                return
            self.started = True
            # The response's age counts from its start, not from the end of a slow stream.
            decision = cache.rules.decide(
                self._request,
                message["status"],
                message.get("headers", ()),
                now=cache.clock(),
                ttl=self._request.route.ttl or cache.ttl,
                veto="the response has trailers" if message.get("trailers") else None,
                requested_at=self._requested_at,
            )
            message.setdefault("headers", [])
            self._start = message
            if decision.reason is not None:
                logger.debug("not stored %r: %s", self._request.key, decision.reason)
                await self._give_up()
                await self._send(self._with_status(message, stored=False))
                return
            self._decision = decision
            self._state = self._HOLD
            return
        self.started = True
        if kind != "http.response.body" or state == self._WAIT:
            # Anything else (pathsend, trailers, debug messages ...) is not ours to store.
            if state != self._WAIT:
                await self._give_up()
            await self._send(message)
            return

        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        max_body_size = self._middleware.max_body_size
        if state == self._HOLD:
            assert self._start is not None
            if not more:
                self._state = self._PASS
                if len(body) > max_body_size:
                    self._resolve(None)
                    await self._send(self._with_status(self._start, stored=False))
                    await self._send(message)
                    return
                entry = self._store_entry(body)
                self._resolve(entry)
                # Stored before it is sent: a client that asks again is served from it.
                await cache.astore(self._request, entry)
                await self._middleware._send_reply(
                    self._send, self._request, entry, hit=False, fwd=self._fwd, stored=True
                )
                return
            # A streamed body: pass it through as it comes, keeping a copy while it fits.
            # Waiters are released now: a stream may last (server-sent events ...), and
            # they must not wait for its end to get a single byte.
            self._state = self._COPY
            self._resolve(None)
            await self._send(self._with_status(self._start, stored=False))
        self._size += len(body)
        if self._size > max_body_size:
            await self._give_up()
            await self._send(message)
            return
        self._buffer.append(body)
        if not more:
            self._state = self._PASS
            entry = self._store_entry(b"".join(self._buffer))
            self._buffer = []
            await cache.astore(self._request, entry)
        await self._send(message)
