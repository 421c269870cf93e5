"""A user-space TCP proxy that misbehaves on demand, for the chaos tests (no netem here).

``ChaosProxy(target_port)`` listens on a free 127.0.0.1 port and relays every connection
to the target. A test points a client at :attr:`ChaosProxy.port` and switches faults at
run time, from any thread:

* :meth:`delay` - every chunk waits that long in each direction (order kept);
* :meth:`blackhole` - bytes in both directions are discarded, connections stay open (a
  silent network failure; a byte stream with a hole in it is garbage to the protocol);
* :meth:`stall` - bytes are no longer read, so they wait in the kernel's buffers and the
  senders block (a hung link or peer); :meth:`heal` lets them through, nothing lost;
* :meth:`reset` - every open connection is aborted with a TCP RST, now;
* :meth:`drop` - the next ``n`` connections (or all, until healed) are reset as soon as
  they are accepted (a lost connect, as near as user space gets);
* :meth:`refuse` - stop listening: connections are refused;
* :meth:`heal` - all of the above off.

One asyncio loop on a daemon thread serves every connection; :meth:`close` stops it and
aborts what is open. Counters (:attr:`accepted`, :attr:`open`, :attr:`forwarded`,
:attr:`discarded`, :attr:`resets`) let tests check that a fault did happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Self

__all__ = ["ChaosProxy"]

HOST = "127.0.0.1"
_CHUNK = 65536
#: Chunks queued per direction before the reader waits (backpressure while delaying).
_QUEUE = 64


def _rst(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One proxied connection: the client's side and the target's side."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        target: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client = client
        self.target = target
        self.tasks: list[asyncio.Task] = []

    def abort(self) -> None:
        for _, writer in (self.client, self.target):
            _rst(writer)
        for task in self.tasks:
            task.cancel()


class ChaosProxy:
    """Relay 127.0.0.1:``port`` to ``target_host``:``target_port``, with faults on demand."""

    def __init__(
        self, target_port: int, *, target_host: str = HOST, port: int | None = None
    ) -> None:
        self.target = (target_host, target_port)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing: asyncio.Event | None = None
        self._delay = 0.0
        self._blackhole = False
        self._drop: int | None = 0
        self.accepted = 0
        self.forwarded = 0
        self.discarded = 0
        self.resets = 0

    # ---- life cycle ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port clients connect to (fixed once started)."""
        if self._port is None:
            raise RuntimeError("the proxy has no port until it is started")
        return self._port

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``."""
        return f"{HOST}:{self.port}"

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._links)

    def start(self) -> Self:
        """Listen (on a free port the first time) and serve on a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already running")
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="chaos-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def close(self) -> None:
        """Stop listening, abort every connection, stop the thread."""
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "?"
        return f"<ChaosProxy {HOST}:{port} -> {self.target[0]}:{self.target[1]}>"

    # ---- faults ------------------------------------------------------------------------

    def delay(self, seconds: float) -> None:
        """Hold every chunk ``seconds`` before passing it on (0: no delay)."""
        if not seconds >= 0:
            raise ValueError(f"delay must be >= 0, got {seconds!r}")
        self._delay = float(seconds)

    def blackhole(self, on: bool = True) -> None:
        """Discard every byte in both directions (connections stay open)."""
        self._blackhole = on

    def stall(self, on: bool = True) -> None:
        """Stop reading (True) or read again (False): nothing is lost, everything waits."""
        self._call(lambda: self._flowing.set() if not on else self._flowing.clear())

    def reset(self) -> int:
        """Abort every open connection with a RST now; returns how many there were."""
        return self._call(self._reset_all)

    def drop(self, n: int | None = 1) -> None:
        """Reset the next ``n`` connections as soon as they are accepted (None: every one
        until :meth:`heal`)."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"n must be a non-negative int or None, got {n!r}")
        self._drop = n

    def refuse(self, on: bool = True) -> None:
        """Stop listening (connections are refused) or listen again on the same port."""
        self._call(self._unlisten if on else self._listen)

    def heal(self) -> None:
        """Back to a plain relay: no delay, blackhole, stall, drops or refusal."""
        self._delay = 0.0
        self._blackhole = False
        self._drop = 0
        self.stall(False)
        self.refuse(False)

    # ---- inside the loop ------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (a function, or one returning a coroutine) on the loop; its result."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("the proxy is not running")

        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, HOST, self._port or 0, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def _reset_all(self) -> int:
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        self.resets += len(links)
        return len(links)

    async def _shutdown(self) -> None:
        await self._unlisten()
        self._reset_all()
        current = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not current]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._drop is None or self._drop > 0:
            if self._drop is not None:
                self._drop -= 1
            self.resets += 1
            _rst(writer)
            return
        try:
            target = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            self.resets += 1
            _rst(writer)  # the target is down: the client sees its connection fail
            return
        link = _Link((reader, writer), target)
        self._links.add(link)
        up = asyncio.create_task(self._pump(reader, target[1]))
        down = asyncio.create_task(self._pump(target[0], writer))
        link.tasks = [up, down]
        try:
            await asyncio.gather(up, down)
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                for _, w in (link.client, link.target):
                    w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one direction into a queue; a second task writes it out, delayed if asked."""
        assert self._flowing is not None
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE)
        sender = asyncio.create_task(self._send(queue, writer))
        try:
            while True:
                data = await reader.read(_CHUNK)
                # Stalled meanwhile: hold what was read, read nothing more.
                await self._flowing.wait()
                if not data:
                    break
                if self._blackhole:
                    self.discarded += len(data)
                    continue
                await queue.put((time.monotonic() + self._delay, data))
            await queue.put(None)
            await sender
        finally:
            sender.cancel()

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                with contextlib.suppress(OSError):
                    writer.write_eof()  # half-close: pass the peer's FIN on
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._blackhole:
                self.discarded += len(data)
                continue
            writer.write(data)
            await writer.drain()
            self.forwarded += len(data)
