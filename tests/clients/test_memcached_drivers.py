"""The blocking and asyncio drivers run one operation alike (fake servers, no sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest

from chorde.clients.memcached import aio, blocking
from chorde.clients.memcached.calls import BATCH, CALL, IO, PARALLEL, SLEEP
from chorde.clients.memcached.protocol import Line, Reply, Values


class _FakeConn:
    """Answers each request with canned bytes (fed to the real reply parser) or an error."""

    def __init__(self, server: _FakeServer) -> None:
        self.server = server

    def _answer(self, data: bytes, reply: Reply | None):
        self.server.log.append(data)
        answer = self.server.answers[data]
        if isinstance(answer, BaseException):
            raise answer
        if reply is None:
            return None
        for i in range(len(answer)):  # byte by byte: the parser is incremental
            if reply.feed(answer[i : i + 1]):
                return reply.result
        raise AssertionError("incomplete canned answer")

    def request(self, data, reply, deadline):
        self.server.deadlines.append(deadline)
        return self._answer(data, reply)

    request_by = request


class _FakeAsyncConn(_FakeConn):
    async def request(self, data, reply, deadline):
        self.server.deadlines.append(deadline)
        await asyncio.sleep(0)
        return self._answer(data, reply)


class _FakeServer:
    timeout = 30.0

    def __init__(self, answers: dict[bytes, bytes | BaseException]) -> None:
        self.answers = answers
        self.log: list[bytes] = []
        self.deadlines: list[float] = []

    def conn(self):
        return _FakeConn(self)

    def aconn(self, loop):
        return _FakeAsyncConn(self)


async def _doubled(value):
    await asyncio.sleep(0)
    return value * 2


def _sub(server: _FakeServer, request: bytes):
    """A sub-operation of a PARALLEL call: one request, its answer or what it raised."""
    try:
        return (yield (IO, server, request, Values()))
    except ConnectionResetError as exc:
        return type(exc).__name__


def _operation(a: _FakeServer, b: _FakeServer, events: list, awaitable: bool):
    """An operation using every kind of call, and catching a failure thrown into it."""
    found = yield (IO, a, b"get k\r\n", Values())
    events.append(("found", found))
    try:
        yield (IO, b, b"get broken\r\n", Values())
    except ConnectionResetError as exc:
        events.append(("thrown in", type(exc).__name__))
    results = yield (
        BATCH,
        [(a, b"touch k 1\r\n", Line()), (b, b"get broken\r\n", Values())],
    )
    events.append(("batch", [r if isinstance(r, bytes) else type(r).__name__ for r in results]))
    assert (yield (SLEEP, 0.001)) is None
    # (Only an event loop can wait for an awaitable; the blocking driver passes it on.)
    called = yield (CALL, _doubled if awaitable else (lambda v: v * 2), 21)
    yield (BATCH, [(a, b"delete k noreply\r\n", None)])
    both = yield (PARALLEL, [_sub(a, b"get k\r\n"), _sub(b, b"get broken\r\n")])
    events.append(("parallel", both))
    return found[b"k"] + b"/" + str(called).encode()


def _servers():
    a = _FakeServer(
        {
            b"get k\r\n": b"VALUE k 0 1\r\nv\r\nEND\r\n",
            b"touch k 1\r\n": b"TOUCHED\r\n",
            b"delete k noreply\r\n": b"",
        }
    )
    b = _FakeServer({b"get broken\r\n": ConnectionResetError("reset")})
    return a, b


def _one_by_one(ios, deadline):
    """blocking.exchange for fake servers: each request in turn (the real one needs sockets;
    see the tests on loopback servers below)."""
    results = []
    for server, data, reply in ios:
        try:
            results.append(server.conn().request_by(data, reply, deadline))
        except Exception as exc:
            results.append(exc)
    return results


def test_both_drivers_run_an_operation_alike(monkeypatch):
    monkeypatch.setattr(blocking, "exchange", _one_by_one)
    a, b = _servers()
    sync_events: list = []
    assert blocking.run(_operation(a, b, sync_events, awaitable=False)) == b"v/42"
    sync_log = (list(a.log), list(b.log))

    a, b = _servers()
    async_events: list = []
    assert asyncio.run(aio.run(_operation(a, b, async_events, awaitable=True))) == b"v/42"
    assert (a.log, b.log) == sync_log
    assert (
        sync_events
        == async_events
        == [
            ("found", {b"k": b"v"}),
            ("thrown in", "ConnectionResetError"),
            ("batch", [b"TOUCHED", "ConnectionResetError"]),
            ("parallel", [{b"k": b"v"}, "ConnectionResetError"]),
        ]
    )
    # Every request of the operation had the same deadline, moved back by the sleep.
    deadlines = a.deadlines + b.deadlines
    assert len(set(deadlines)) <= 2 and max(deadlines) - min(deadlines) < 1.0


@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_an_uncaught_failure_leaves_the_driver_and_closes_the_operation(driver):
    server = _FakeServer({b"get k\r\n": ConnectionResetError("reset")})
    closed = []

    def op():
        try:
            yield (IO, server, b"get k\r\n", Values())
        finally:
            closed.append(True)

    with pytest.raises(ConnectionResetError):
        if driver == "blocking":
            blocking.run(op())
        else:
            asyncio.run(aio.run(op()))
    assert closed == [True]


def test_an_interrupted_operation_is_closed():
    server = _FakeServer({b"get k\r\n": KeyboardInterrupt()})  # not thrown into the op
    closed = []

    def op():
        try:
            yield (IO, server, b"get k\r\n", Values())
        except Exception:  # pragma: no cover - must not happen
            closed.append("caught")
        finally:
            closed.append(True)

    with pytest.raises(KeyboardInterrupt):
        blocking.run(op())
    assert closed == [True]


# ---- the transports: a whole call is bounded, a read never huge ------------------------


def test_a_huge_announced_value_never_asks_for_a_huge_read():
    from chorde.clients.memcached.transport import RECV_MAX, RECV_SIZE, read_size

    reply = Values()
    assert read_size(reply) == RECV_SIZE
    assert not reply.feed(b"VALUE k 0 99999999999\r\nab")
    assert reply.missing > RECV_MAX
    assert read_size(reply) == RECV_MAX


class _Dripping:
    """A loopback server answering every request with a reply dripped over ``pieces``
    writes ``gap`` seconds apart: each read is quick, the whole reply slow."""

    def __init__(self, pieces: int = 30, gap: float = 0.05) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.pieces, self.gap = pieces, gap
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(5)
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            with conn:
                conn.recv(1024)
                value = b"x" * self.pieces
                data = b"VALUE k 0 %d\r\n%s\r\nEND\r\n" % (len(value), value)
                step = max(1, len(data) // self.pieces)
                for i in range(0, len(data), step):  # bounded: ~pieces writes
                    if self.stop.wait(self.gap):
                        return
                    conn.sendall(data[i : i + step])

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(5)


@pytest.mark.parametrize("transport", ["blocking", "asyncio"])
def test_the_timeout_bounds_the_whole_call_not_each_read(transport):
    server = _Dripping()
    try:
        if transport == "blocking":
            conn = blocking.Connection(server.address, 1.0, 0.5)
            with pytest.raises(TimeoutError):
                conn.request(b"get k\r\n", Values(), time.monotonic() + 0.5)
        else:
            aconn = aio.Connection(server.address, 1.0, 0.5)

            async def call():
                return await aconn.request(b"get k\r\n", Values(), time.monotonic() + 0.5)

            with pytest.raises(TimeoutError):
                asyncio.run(call())
            conn = aconn
        assert conn.sock is None  # closed: the stream was left mid-reply
    finally:
        server.close()


def test_a_dripped_reply_within_the_timeout_is_read_whole():
    server = _Dripping(pieces=5, gap=0.01)
    try:
        conn = blocking.Connection(server.address, 1.0, 5.0)
        assert conn.request(b"get k\r\n", Values(), time.monotonic() + 5) == {b"k": b"x" * 5}
        conn.close()
    finally:
        server.close()


class _AnswersOnce:
    """A loopback server that answers the first request of a connection (``STORED``), then
    reads and never answers again: a server that hangs between two requests."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(5)
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"STORED\r\n")
                self.stop.wait(10)  # (bounded) the second request is read, never answered

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(5)


class _Owner:
    def __init__(self) -> None:
        self.orphans: list[socket.socket] = []

    def orphan(self, sock, reply) -> None:
        self.orphans.append(sock)

    def connected(self) -> None:
        pass


def test_a_request_on_an_open_connection_times_out_as_a_timeout():
    """The one-request fast path (an open connection, a small request) waits at rest for
    its reply, bounded by the kernel on Linux: the wait that runs out is a TimeoutError, so
    the write is handed to the owner (it may still be applied) and not retried."""
    server = _AnswersOnce()
    owner = _Owner()
    try:
        conn = blocking.Connection(server.address, 1.0, 0.3, owner=owner)
        request = b"set k 0 60 1\r\nx\r\n"
        assert conn.request(request, Line(), time.monotonic() + 0.3) == b"STORED"
        sock = conn.sock
        assert sock is not None
        assert sock.gettimeout() == (None if blocking._KERNEL_TIMEOUTS else 0.3)  # at rest
        with pytest.raises(TimeoutError):
            conn.request(request, Line(), time.monotonic() + 0.3)
        assert conn.sock is None and owner.orphans == [sock]
        sock.close()
    finally:
        server.close()
