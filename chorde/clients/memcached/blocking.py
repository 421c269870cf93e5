"""The blocking transport: one socket per thread and server, and the blocking driver.

:class:`Connection` sends a request and feeds what it receives to a
:class:`~chorde.clients.memcached.protocol.Reply` until the reply is complete, by the call's
deadline (over the whole call, not per read). :func:`exchange` makes requests to several
servers at the same time from one thread (non-blocking sockets and a selector), so a hung
server costs the others nothing. :func:`run` drives an operation (a generator of calls, see
:mod:`.calls`) over the servers' connections of the calling thread; :func:`drain` waits for
the replies of orphaned writes (see :mod:`.transport`).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import selectors
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from chorde.clients.memcached import calls
from chorde.clients.memcached.protocol import Reply
from chorde.clients.memcached.transport import RECV_SIZE, BaseConnection, read_size, retryable

__all__ = ["Connection", "drain", "exchange", "run"]

T = TypeVar("T")

# Requests up to this size never wait to be sent (the kernel's socket buffer takes them).
_SMALL = 16384
_IO = calls.IO
_monotonic = time.monotonic


def _timed_out(timeout: float) -> TimeoutError:
    return TimeoutError(f"no complete reply within {timeout} s")


# A socket at rest (between requests) waits ``timeout`` at most in each send and receive. In
# Python's timeout mode each of them is a poll() then the call, each releasing the GIL: on
# loopback that is 2-4 us of a 12-20 us get. On Linux the kernel bounds them instead
# (SO_SNDTIMEO/SO_RCVTIMEO on a blocking socket: one system call each, and a wait that ends
# unanswered raises BlockingIOError, which the fast path of Connection.request reports as the
# timeout it is). Every other wait sets Python's timeout mode with what is left of its
# deadline, and puts the socket back at rest after.
_KERNEL_TIMEOUTS = sys.platform.startswith("linux")


def _arm(sock: socket.socket, timeout: float) -> None:
    """Make a connected socket wait ``timeout`` at most per send and receive, at rest."""
    if _KERNEL_TIMEOUTS and timeout > 0:  # (0 would be no bound at all to the kernel)
        seconds = int(timeout)
        micros = max(int((timeout - seconds) * 1e6), 0 if seconds else 1)
        interval = struct.pack("@ll", seconds, micros)  # struct timeval
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)
    _rest(sock, timeout)


def _rest(sock: socket.socket, timeout: float) -> None:
    """Put a socket :func:`_arm`-ed with ``timeout`` back at rest."""
    sock.settimeout(None if _KERNEL_TIMEOUTS and timeout > 0 else timeout)


def _as_timeout(exc: BaseException, timeout: float) -> BaseException:
    """``exc``, or the timeout it stands for (a kernel-bounded wait that ran out)."""
    return _timed_out(timeout) if isinstance(exc, BlockingIOError) else exc


class Connection(BaseConnection):
    """One blocking TCP connection to a memcached server, opened on first use.

    Any failure during a request (including a timeout or an interrupt) drops the socket,
    since the stream could be left mid-reply; the next request reconnects. A failure before
    the server answered anything is retried on a new connection (see :mod:`.transport`).
    """

    __slots__ = ()

    def connect(self, timeout: float) -> socket.socket:
        """Open the socket (within ``timeout``); it then waits ``self.timeout`` at the most."""
        sock = socket.create_connection(self.address, timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _arm(sock, self.timeout)
        except BaseException:
            sock.close()
            raise
        self.opened(sock)
        return sock

    def request(self, data: bytes, reply: Reply | None, deadline: float) -> Any:
        """Send ``data``; return ``reply``'s result once complete (None when no reply).

        For the first request of a call: ``deadline`` is ``timeout`` from about now, which
        the socket's own timeout already is. A small request goes at once into the socket's
        buffer and the reply usually comes in one read; any other wait gets only what is
        left of the time.
        """
        sock = self.sock
        if sock is None or len(data) > _SMALL:
            return self._request(data, reply, deadline, self.retries)
        try:
            sock.sendall(data)
        except BaseException as exc:
            return self._failed(_as_timeout(exc, self.timeout), data, reply, deadline, False)
        if reply is None:
            return None
        try:
            if not reply.feed(sock.recv(RECV_SIZE)):
                self._read_until(deadline, reply)
        except BaseException as exc:
            return self._failed(_as_timeout(exc, self.timeout), data, reply, deadline, True)
        if reply.rest:  # out of step with the server: see BaseConnection.finish
            self.close()
        return reply.result

    def request_by(self, data: bytes, reply: Reply | None, deadline: float) -> Any:
        """:meth:`request`, for any request of a call: all of it by ``deadline``."""
        return self._request(data, reply, deadline, self.retries)

    def _failed(
        self, exc: BaseException, data: bytes, reply: Reply | None, deadline: float, sent: bool
    ) -> Any:
        """After the fast path of :meth:`request` failed: retry, or raise ``exc``."""
        self.drop(exc, reply, sent)
        if self.retries and retryable(exc, reply, True) and _monotonic() < deadline:
            return self._request(data, reply, deadline, self.retries - 1)
        raise exc

    def _request(self, data: bytes, reply: Reply | None, deadline: float, retries: int) -> Any:
        """The request by ``deadline``, connecting first if need be, each wait bounded by what
        is left of the time; a failure before the reply began is retried ``retries`` times."""
        while True:
            connected = sent = False
            try:
                left = deadline - _monotonic()
                if left <= 0:
                    raise _timed_out(self.timeout)
                sock = self.sock
                if sock is None:
                    sock = self.connect(min(self.connect_timeout, left))
                    left = deadline - _monotonic()
                    if left <= 0:
                        raise _timed_out(self.timeout)
                connected = True
                sock.settimeout(left)
                try:
                    sock.sendall(data)
                    sent = True
                    if reply is None:
                        return None
                    while not reply.feed(sock.recv(read_size(reply))):
                        left = deadline - _monotonic()
                        if left <= 0:
                            raise _timed_out(self.timeout)
                        sock.settimeout(left)
                finally:
                    if self.sock is sock:
                        _rest(sock, self.timeout)
            except BaseException as exc:
                self.drop(exc, reply, sent)
                if retries and retryable(exc, reply, connected) and _monotonic() < deadline:
                    retries -= 1
                    continue
                raise
            return self.finish(reply)

    def _read_until(self, deadline: float, reply: Reply) -> None:
        """Read until ``reply`` is complete, each wait bounded by what is left of the time."""
        sock = self.sock
        assert sock is not None
        try:
            while True:
                left = deadline - _monotonic()
                if left <= 0:
                    raise _timed_out(self.timeout)
                sock.settimeout(left)
                if reply.feed(sock.recv(read_size(reply))):
                    return
        finally:
            _rest(sock, self.timeout)


# ---- several servers at once ------------------------------------------------------------


def _start_connect(address: tuple[str, int]) -> socket.socket:
    """A non-blocking socket whose connect to ``address`` is under way."""
    host, port = address
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        target: Any = address
    except ValueError:  # a name: the system resolver, as socket.create_connection would
        family, _, _, _, target = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(target)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


class _Exchange:
    """One request of :func:`exchange`: connecting, sending, then receiving."""

    __slots__ = ("conn", "connect_by", "connected", "data", "out", "reply", "retries", "sent")

    def __init__(self, conn: Connection, data: bytes, reply: Reply | None) -> None:
        self.conn = conn
        self.data = data
        self.reply = reply
        self.retries = conn.retries
        self.connect_by = 0.0

    def begin(self, selector: selectors.BaseSelector) -> None:
        conn = self.conn
        self.sent = False
        self.out = memoryview(self.data)
        self.connected = conn.sock is not None
        if not self.connected:
            conn.sock = _start_connect(conn.address)
            self.connect_by = _monotonic() + conn.connect_timeout
        else:
            conn.sock.setblocking(False)  # (at rest again when the exchange ends)
        selector.register(conn.sock, selectors.EVENT_WRITE, self)

    def step(self, selector: selectors.BaseSelector) -> bool:
        """Move on as far as the socket allows; True once done."""
        conn = self.conn
        sock = conn.sock
        assert sock is not None
        if not self.connected:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            self.connected = True
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _arm(sock, conn.timeout)
            sock.setblocking(False)  # (at rest again when the exchange ends)
            conn.opened(sock)
        if not self.sent:
            self.out = self.out[sock.send(self.out) :]
            if self.out:
                return False
            self.sent = True
            if self.reply is None:
                return True
            selector.modify(sock, selectors.EVENT_READ, self)
            return False
        assert self.reply is not None
        return self.reply.feed(sock.recv(read_size(self.reply)))

    def result(self) -> Any:
        return None if self.reply is None else self.conn.finish(self.reply)

    def fail(self, selector: selectors.BaseSelector, exc: BaseException, deadline: float) -> bool:
        """The request failed with ``exc``: True if it was started again (see retryable)."""
        sock = self.conn.sock
        if sock is not None:
            selector.unregister(sock)
        self.conn.drop(exc, self.reply, self.sent)
        if not (self.retries and retryable(exc, self.reply, self.connected)):
            return False
        if _monotonic() >= deadline:
            return False
        self.retries -= 1
        try:
            self.begin(selector)
        except OSError:
            return False
        return True


def exchange(ios: Sequence[tuple[Any, bytes, Reply | None]], deadline: float) -> list[Any]:
    """The results of requests ``(server, data, reply)``, made at the same time on this
    thread's connections (one per server: a server's second request goes after its first),
    all by ``deadline``; a failed request's result is the exception it raised."""
    servers = {io[0] for io in ios}
    if len(servers) != len(ios):
        first: dict[Any, int] = {}
        for i, io in enumerate(ios):
            first.setdefault(io[0], i)
        now = sorted(first.values())
        later = [i for i in range(len(ios)) if i not in set(now)]
        results = [None] * len(ios)
        for part in (now, later):
            for i, result in zip(part, exchange([ios[i] for i in part], deadline), strict=True):
                results[i] = result
        return results
    if len(ios) == 1:
        server, data, reply = ios[0]
        try:
            return [server.conn().request_by(data, reply, deadline)]
        except Exception as exc:
            return [exc]
    results: list[Any] = [None] * len(ios)
    live: dict[_Exchange, int] = {}
    made: list[_Exchange] = []
    selector = selectors.DefaultSelector()
    try:
        for i, (server, data, reply) in enumerate(ios):
            ex = _Exchange(server.conn(), data, reply)
            made.append(ex)
            try:
                ex.begin(selector)
            except OSError as exc:
                if not ex.fail(selector, exc, deadline):
                    results[i] = exc
                    continue
            live[ex] = i
        while live:
            now = _monotonic()
            wake = min([deadline, *(e.connect_by for e in live if not e.connected)])
            for key, _ in selector.select(max(wake - now, 0.0)) if wake > now else ():
                ex = key.data
                try:
                    if not ex.step(selector):
                        continue
                except Exception as exc:
                    if not ex.fail(selector, exc, deadline):
                        results[live.pop(ex)] = exc
                    continue
                selector.unregister(ex.conn.sock)
                results[live.pop(ex)] = ex.result()
            now = _monotonic()
            for ex in [e for e in live if not e.connected and e.connect_by <= now]:
                exc = TimeoutError(f"no connection within {ex.conn.connect_timeout} s")
                if not ex.fail(selector, exc, deadline):
                    results[live.pop(ex)] = exc
            if now >= deadline:
                for ex, i in list(live.items()):
                    ex.retries = 0
                    ex.fail(selector, _timed_out(ex.conn.timeout), deadline)
                    results[i] = _timed_out(ex.conn.timeout)
                live.clear()
    finally:
        selector.close()
        for ex in made:  # the sockets kept go back to rest (connected: armed)
            sock = ex.conn.sock
            if sock is not None and ex.connected:
                _rest(sock, ex.conn.timeout)
    return results


def drain(orphans: Sequence[tuple[socket.socket, Reply]], deadline: float) -> bool:
    """Read the replies of orphaned writes until each is in (or its connection closed), by
    ``deadline``; close every socket. True if every one was answered or closed, i.e. the
    server has done with them."""
    if not orphans:
        return True
    selector = selectors.DefaultSelector()
    try:
        for sock, reply in orphans:
            try:
                selector.register(sock, selectors.EVENT_READ, reply)
            except (OSError, ValueError):  # closed meanwhile: nothing more can come of it
                sock.close()
        while selector.get_map():
            left = deadline - _monotonic()
            if left <= 0:
                return False
            for key, _ in selector.select(left):
                sock, reply = key.fileobj, key.data
                assert isinstance(sock, socket.socket)
                try:
                    done = reply.feed(sock.recv(read_size(reply)))
                except Exception:  # closed or reset: the process that had it is gone
                    done = True
                if done:
                    selector.unregister(sock)
                    sock.close()
        return True
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()


# ---- the driver ---------------------------------------------------------------------------


def run(op: calls.Op[T], deadline: float = 0.0) -> T:
    """Drive the operation ``op`` to its end on the calling thread; return its result.

    Its requests share one ``deadline`` (see :mod:`.calls`): by default ``timeout`` from
    the first one.
    """
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
                    if deadline:
                        result = conn.request_by(call[2], call[3], deadline)
                    else:
                        deadline = _monotonic() + server.timeout
                        result = conn.request(call[2], call[3], deadline)
                except Exception as exc:
                    call = op.throw(exc)
                    continue
            else:
                try:
                    result, deadline = _perform(call, deadline)
                except Exception as exc:
                    call = op.throw(exc)
                    continue
            call = send(result)
    except StopIteration as stop:
        return stop.value
    finally:
        op.close()  # (at once, should the caller be interrupted)


def _perform(call: tuple, deadline: float) -> tuple[Any, float]:
    """A call other than IO: ``(its result, the deadline, moved by what it waited)``."""
    kind = call[0]
    if kind is calls.BATCH:
        ios = call[1]
        if not ios:
            return [], deadline
        if not deadline:
            deadline = _monotonic() + ios[0][0].timeout
        return exchange(ios, deadline), deadline
    if kind is calls.PARALLEL:
        return _parallel(call[1], deadline)
    start = _monotonic()
    if kind is calls.SLEEP:
        time.sleep(call[1])
        result = None
    else:  # calls.CALL: nothing to await without an event loop
        result = call[1](call[2])
    if deadline:
        deadline += _monotonic() - start
    return result, deadline


def _parallel(ops: Sequence[calls.Op[Any]], deadline: float) -> tuple[list[Any], float]:
    """Run ``ops`` together: in each round, the request each is waiting for (one per server)
    goes out in one :func:`exchange`; anything else they ask is done in turn."""
    results: list[Any] = [None] * len(ops)
    pending: dict[int, tuple] = {}

    def advance(i: int, value: Any, exc: Exception | None = None) -> None:
        op = ops[i]
        try:
            pending[i] = op.send(value) if exc is None else op.throw(exc)
        except StopIteration as stop:
            results[i] = stop.value
            pending.pop(i, None)
        except Exception as failure:
            results[i] = failure
            pending.pop(i, None)

    try:
        for i in range(len(ops)):
            advance(i, None)
        while pending:
            ios: list[tuple[Any, bytes, Reply | None]] = []
            waiting: list[int] = []
            busy = set()
            for i, call in list(pending.items()):
                if call[0] is not _IO:
                    try:
                        result, deadline = _perform(call, deadline)
                    except Exception as exc:
                        advance(i, None, exc)
                    else:
                        advance(i, result)
                elif call[1] not in busy:
                    busy.add(call[1])
                    ios.append(call[1:])
                    waiting.append(i)
            if ios:
                if not deadline:
                    deadline = _monotonic() + ios[0][0].timeout
                for i, result in zip(waiting, exchange(ios, deadline), strict=True):
                    if isinstance(result, Exception):
                        advance(i, None, result)
                    else:
                        advance(i, result)
    finally:
        for op in ops:
            op.close()
    return results, deadline
