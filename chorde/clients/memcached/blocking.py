"""The blocking transport: one socket per thread and server, and the blocking driver.

:class:`Connection` sends a request and feeds what it receives to a
:class:`~chorde.clients.memcached.protocol.Reply` until the reply is complete, within the
call's ``timeout`` (a deadline over the whole call, not per read). :func:`run` drives an
operation (a generator of calls, see :mod:`.calls`) over the servers' connections of the
calling thread.
"""

from __future__ import annotations

import socket
import time
from typing import Any, TypeVar

from chorde.clients.memcached import calls
from chorde.clients.memcached.protocol import Reply
from chorde.clients.memcached.transport import RECV_SIZE, BaseConnection, read_size

__all__ = ["Connection", "run"]

T = TypeVar("T")

# Requests up to this size never wait to be sent (the kernel's socket buffer takes them).
_SMALL = 16384
_IO = calls.IO


class Connection(BaseConnection):
    """One blocking TCP connection to a memcached server, opened on first use.

    Any failure during a request (including a timeout or an interrupt) closes the socket,
    since the stream could be left mid-reply; the next request reconnects.
    """

    __slots__ = ()

    def connect(self) -> socket.socket:
        """Open the socket (within ``connect_timeout``); it waits ``timeout`` at the most."""
        sock = socket.create_connection(self.address, timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        return sock

    def request(self, data: bytes, reply: Reply | None) -> Any:
        """Send ``data``; return ``reply``'s result once complete (None when no reply).

        The whole call is bounded by ``timeout``: a small request goes at once into the
        socket's buffer and the reply usually comes in one read, which the socket's own
        timeout bounds; any other wait gets only what is left of the time.
        """
        sock = self.sock
        if sock is None:
            sock = self.connect()
        deadline = time.monotonic() + self.timeout
        try:
            sock.sendall(data)
            if reply is None:
                return None
            if len(data) > _SMALL or not reply.feed(sock.recv(RECV_SIZE)):
                self._read_until(deadline, reply)
        except BaseException:
            self.close()
            raise
        if reply.rest:  # out of step with the server: see BaseConnection.finish
            self.close()
        return reply.result

    def _read_until(self, deadline: float, reply: Reply) -> None:
        """Read until ``reply`` is complete, each wait bounded by what is left of the time."""
        sock = self.sock
        assert sock is not None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no complete reply within {self.timeout} s")
                sock.settimeout(left)
                if reply.feed(sock.recv(read_size(reply))):
                    return
        finally:
            sock.settimeout(self.timeout)


def run(op: calls.Op[T]) -> T:
    """Drive the operation ``op`` to its end on the calling thread; return its result."""
    send = op.send
    try:
        call = send(None)
        while True:
            if call[0] is _IO:
                server = call[1]
                try:
                    try:
                        conn = server._local.conn
                    except AttributeError:
                        conn = server.conn()
                    result = conn.request(call[2], call[3])
                except Exception as exc:
                    call = op.throw(exc)
                    continue
                if server.dead_until:
                    server.back()
            else:
                result = _other(call)
            call = send(result)
    except StopIteration as stop:
        return stop.value
    finally:
        op.close()  # (at once, should the caller be interrupted)


def _other(call: tuple) -> Any:
    kind = call[0]
    if kind is calls.BATCH:
        # One server after the other (each bounded by its own timeout).
        return [_attempt(*io) for io in call[1]]
    if kind is calls.SLEEP:
        time.sleep(call[1])
        return None
    return call[1]  # calls.AWAIT: nothing to wait for without an event loop


def _attempt(server: Any, data: bytes, reply: Reply | None) -> Any:
    """One request of a batch: its result, or the exception it raised (as a value)."""
    try:
        result = server.conn().request(data, reply)
    except Exception as exc:
        return exc
    if server.dead_until:
        server.back()
    return result
