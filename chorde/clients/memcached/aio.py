"""The asyncio transport: a pool of connections per event loop and server, and the driver.

:class:`Connection` speaks over the loop's ``sock_*`` calls on a socket of its own, feeding
what it receives to a :class:`~chorde.clients.memcached.protocol.Reply`. :class:`Pool`
lends each request a connection of its own, so concurrent calls never wait behind one
another's replies: a call waits for a connection only when ``size`` of them are busy, and
then no longer than its own deadline. :func:`run` drives an operation (a generator of calls,
see :mod:`.calls`) on the running loop, never through an executor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import ipaddress
import socket
import time
from typing import Any, TypeVar

from chorde.clients.memcached import calls
from chorde.clients.memcached.protocol import Reply
from chorde.clients.memcached.transport import BaseConnection, Owner, read_size, retryable

__all__ = ["Connection", "Pool", "run", "runs_in"]

T = TypeVar("T")
_monotonic = time.monotonic


def runs_in(loop: asyncio.AbstractEventLoop) -> bool:
    """True when called from ``loop``'s own thread while it runs."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Connection(BaseConnection):
    """One asyncio connection to a server, used by one request at a time (see :class:`Pool`).

    Built on the loop's ``sock_*`` calls over a socket of our own, not on a stream transport:
    a transport is bound to its loop and cannot be closed once the loop is, while this
    socket is registered with the loop only during a request, so it can be closed whenever
    its loop goes away. Any failure or cancellation mid-request drops the socket, since the
    stream could be left mid-reply; the next request reconnects. A failure before the server
    answered anything is retried on a new connection (see :mod:`.transport`).
    """

    __slots__ = ()

    async def _connect(self, loop: asyncio.AbstractEventLoop, timeout: float) -> socket.socket:
        host, port = self.address
        async with asyncio.timeout(timeout):
            if _is_ip(host):
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                address: Any = self.address
            else:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, _, _, _, address = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
            except BaseException:
                sock.close()
                raise
        self.opened(sock)
        return sock

    async def request(self, data: bytes, reply: Reply | None, deadline: float) -> Any:
        """Send ``data``; return ``reply``'s result once complete (None when no reply), all
        by ``deadline`` (:func:`time.monotonic`)."""
        loop = asyncio.get_running_loop()
        retries = self.retries
        while True:
            connected = sent = False
            try:
                async with asyncio.timeout(deadline - _monotonic()):
                    sock = self.sock
                    if sock is None:
                        left = deadline - _monotonic()
                        sock = await self._connect(loop, min(self.connect_timeout, left))
                    connected = True
                    await loop.sock_sendall(sock, data)
                    sent = True
                    if reply is None:
                        return None
                    while not reply.feed(await loop.sock_recv(sock, read_size(reply))):
                        pass
            except BaseException as exc:
                self.drop(exc, reply, sent)
                if retries and retryable(exc, reply, connected) and _monotonic() < deadline:
                    retries -= 1
                    continue
                if isinstance(exc, TimeoutError) and not exc.args:  # (asyncio.timeout's)
                    what = "reply" if connected else "connection"
                    raise TimeoutError(f"no {what} within {self.timeout} s") from None
                raise
            return self.finish(reply)


class Pool:
    """The connections of one event loop to one server: at most ``size``, each lent to one
    request at a time.

    A request takes the connection used last (its socket is likeliest to be open), or opens
    one while fewer than ``size`` exist, or waits for one to come back, first come first
    served, until its deadline. No reference to the loop is kept while nobody waits.
    """

    __slots__ = ("__weakref__", "_closed", "_count", "_idle", "_make", "_waiters", "size")

    def __init__(
        self,
        address: tuple[str, int],
        connect_timeout: float,
        timeout: float,
        *,
        size: int,
        retries: int = 1,
        owner: Owner | None = None,
    ) -> None:
        self.size = size
        self._make = lambda: Connection(address, connect_timeout, timeout, retries, owner)
        self._idle: list[Connection] = []
        self._count = 0
        self._waiters: collections.deque[asyncio.Future[Connection]] = collections.deque()
        self._closed = False

    @property
    def connections(self) -> int:
        """Connections lent or idle now."""
        return self._count

    async def request(self, data: bytes, reply: Reply | None, deadline: float) -> Any:
        """:meth:`Connection.request` on a connection of the pool."""
        idle = self._idle
        conn = idle.pop() if idle else await self._acquire(deadline)
        try:
            return await conn.request(data, reply, deadline)
        finally:
            self._release(conn)

    async def _acquire(self, deadline: float) -> Connection:
        if self._count < self.size:
            self._count += 1
            return self._make()
        waiter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(deadline - _monotonic()):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed over just as we gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"all {self.size} connections busy till the deadline") from None
            raise

    def _release(self, conn: Connection) -> None:
        if self._closed:
            conn.close()
            self._count -= 1
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def close(self) -> None:
        """Close the idle connections; those lent out are closed as they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        self._count -= len(idle)
        for conn in idle:
            conn.close()


async def run(op: calls.Op[T], deadline: float = 0.0) -> T:
    """Drive the operation ``op`` to its end on the running event loop; return its result.

    Its requests share one ``deadline`` (see :mod:`.calls`): by default ``timeout`` from
    the first one.
    """
    loop = asyncio.get_running_loop()
    try:
        call = op.send(None)
        while True:
            kind = call[0]
            try:
                if kind is calls.IO:
                    server = call[1]
                    if not deadline:
                        deadline = _monotonic() + server.timeout
                    result = await server.aconn(loop).request(call[2], call[3], deadline)
                elif kind is calls.BATCH:
                    ios = call[1]
                    if ios and not deadline:
                        deadline = _monotonic() + ios[0][0].timeout
                    result = await _batch(loop, ios, deadline)
                elif kind is calls.PARALLEL:
                    subs = [run(sub, deadline) for sub in call[1]]
                    result = await asyncio.gather(*subs, return_exceptions=True)
                else:
                    start = _monotonic()
                    if kind is calls.SLEEP:
                        result = await asyncio.sleep(call[1])
                    else:  # calls.CALL
                        result = call[1](call[2])
                        if inspect.isawaitable(result):
                            result = await result
                    if deadline:
                        deadline += _monotonic() - start
            except Exception as exc:
                call = op.throw(exc)
                continue
            call = op.send(result)
    except StopIteration as stop:
        return stop.value
    finally:
        op.close()  # (at once, should the caller be interrupted)


async def _batch(loop: asyncio.AbstractEventLoop, ios: list[tuple], deadline: float) -> list[Any]:
    """The results of requests to several servers, made concurrently; failures as values."""
    if len(ios) != 1:
        requests = (s.aconn(loop).request(data, reply, deadline) for s, data, reply in ios)
        return await asyncio.gather(*requests, return_exceptions=True)
    server, data, reply = ios[0]
    try:
        return [await server.aconn(loop).request(data, reply, deadline)]
    except Exception as exc:
        return [exc]
