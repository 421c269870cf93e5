"""The asyncio transport: one connection per event loop and server, and the asyncio driver.

:class:`Connection` speaks over the loop's ``sock_*`` calls on a socket of its own, feeding
what it receives to a :class:`~chorde.clients.memcached.protocol.Reply`. :func:`run` drives
an operation (a generator of calls, see :mod:`.calls`) on the running loop, never through an
executor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import ipaddress
import socket
from typing import Any, TypeVar

from chorde.clients.memcached import calls
from chorde.clients.memcached.protocol import Reply
from chorde.clients.memcached.transport import BaseConnection, read_size

__all__ = ["Connection", "run", "runs_in"]

T = TypeVar("T")


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
    """One asyncio connection to a server.

    Built on the loop's ``sock_*`` calls over a socket of our own, not on a stream transport:
    a transport is bound to its loop and cannot be closed once the loop is, while this
    socket is registered with the loop only during a call, so it can be closed whenever its
    loop goes away. One request is in flight at a time (callers queue, first come first
    served); any failure or cancellation mid-request closes the socket, since the stream
    could be left mid-reply, and the next call reconnects. The connect is bounded by
    ``connect_timeout`` and each request by ``timeout``. No reference to the loop is kept
    while idle.
    """

    __slots__ = ("_busy", "_waiters")

    def __init__(self, address: tuple[str, int], connect_timeout: float, timeout: float) -> None:
        super().__init__(address, connect_timeout, timeout)
        self._busy = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    # -- a first come, first served lock that keeps no loop reference while free --

    async def _acquire(self) -> None:
        if not self._busy:
            self._busy = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed over just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the lock passes to it, still busy
                return
        self._busy = False

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        host, port = self.address
        async with asyncio.timeout(self.connect_timeout):
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
        self.sock = sock
        return sock

    async def request(self, data: bytes, reply: Reply | None) -> Any:
        """Send ``data``; return ``reply``'s result once complete (None when no reply)."""
        await self._acquire()
        try:
            loop = asyncio.get_running_loop()
            sock = self.sock
            if sock is None:
                sock = await self._connect(loop)
            try:
                async with asyncio.timeout(self.timeout):
                    await loop.sock_sendall(sock, data)
                    if reply is None:
                        return None
                    while not reply.feed(await loop.sock_recv(sock, read_size(reply))):
                        pass
            except BaseException:
                self.close()
                raise
            return self.finish(reply)
        finally:
            self._release()


async def run(op: calls.Op[T]) -> T:
    """Drive the operation ``op`` to its end on the running event loop; return its result."""
    loop = asyncio.get_running_loop()
    try:
        call = op.send(None)
        while True:
            kind = call[0]
            if kind is calls.IO:
                try:
                    result = await _request(loop, call[1], call[2], call[3])
                except Exception as exc:
                    call = op.throw(exc)
                    continue
            elif kind is calls.BATCH:
                result = await _batch(loop, call[1])
            elif kind is calls.SLEEP:
                result = await asyncio.sleep(call[1])
            else:  # calls.AWAIT
                result = call[1]
                if inspect.isawaitable(result):
                    result = await result
            call = op.send(result)
    except StopIteration as stop:
        return stop.value
    finally:
        op.close()  # (at once, should the caller be interrupted)


async def _batch(loop: asyncio.AbstractEventLoop, batch: list[tuple]) -> list[Any]:
    """The results of requests to several servers, made concurrently; failures as values."""
    if len(batch) != 1:
        requests = (_request(loop, *io) for io in batch)
        return await asyncio.gather(*requests, return_exceptions=True)
    try:
        return [await _request(loop, *batch[0])]
    except Exception as exc:
        return [exc]


async def _request(loop: asyncio.AbstractEventLoop, server: Any, data: bytes, reply: Any) -> Any:
    result = await server.aconn(loop).request(data, reply)
    if server.dead_until:
        server.back()
    return result
