"""Buses over ZeroMQ (pyzmq): through a broker, or straight between a static list of peers.

Both run one I/O thread per bus that owns the sockets (ZeroMQ sockets are not thread-safe):
``publish()`` from any thread signs the frame, queues it and wakes the thread through a
pipe. Sends never block: a frame the transport cannot take right now is dropped and
counted (``bus.dropped``); the coherence layer copes with lost messages (see
:mod:`chorde.clients.coherent`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from chorde.errors import ConfigurationError, require
from chorde.mq.bus import Bus
from chorde.mq.frames import MAX_FRAME, Frames, InvalidFrame, MessageType
from chorde.serialization import RateLimitedLog

zmq = require("zmq", "mq")

__all__ = ["BrokerBus", "PeerBus", "check_endpoint"]

logger = logging.getLogger("chorde.mq")

_SCHEMES = ("tcp://", "ipc://", "inproc://")


def check_endpoint(endpoint: Any, name: str = "endpoint") -> str:
    """Validate a ZeroMQ endpoint string (``tcp://host:port``, ``ipc:///path``)."""
    if not isinstance(endpoint, str) or not endpoint.startswith(_SCHEMES):
        raise ConfigurationError(
            f"{name} must be a ZeroMQ endpoint like 'tcp://127.0.0.1:5555' or "
            f"'ipc:///tmp/chorde.sock', got {endpoint!r}"
        )
    return endpoint


def _endpoints(value: Any, name: str) -> list[str]:
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigurationError(f"{name} must be an endpoint or a list of them, got {value!r}")
    if not items:
        raise ConfigurationError(f"{name} must name at least one endpoint")
    return [check_endpoint(e, name) for e in items]


class _ZmqBus(Bus):
    """The I/O thread and queueing shared by :class:`BrokerBus` and :class:`PeerBus`."""

    def __init__(
        self,
        secret: str | bytes | Sequence[str | bytes],
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float | None = None,
        hwm: int = 10_000,
        context: Any = None,
    ) -> None:
        super().__init__(heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout)
        if isinstance(hwm, bool) or not isinstance(hwm, int) or hwm <= 0:
            raise ConfigurationError(f"hwm must be a positive int, got {hwm!r}")
        self._frames = Frames(secret)
        self._hwm = hwm
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._out: collections.deque[bytes] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._woken = False
        self._log = RateLimitedLog(logger, interval=30.0)
        self._thread: threading.Thread | None = None

    def _release(self, term: bool = True) -> None:
        """Close the wake-up pipe and end our own context (unless a socket may be in use)."""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if not term:
            logger.warning("bus %s: I/O thread did not stop in time", self.peer_id.hex())
        elif self._own_context:
            self._ctx.term()

    def _socket(self, kind: int) -> Any:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 200)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.RCVHWM, self._hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        # Reconnect fast after a broker or peer restart, without hammering a dead one.
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        return sock

    def _start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- sending -------------------------------------------------------------------

    def _send(self, mtype: MessageType, channel: str, items: Sequence[bytes]) -> bool:
        if self.closed:
            self.dropped += 1
            return False
        frames = self._frames
        batches = frames.batches(items, channel) if items else [[]]
        for batch in batches:
            self._out.append(frames.encode(mtype, self.peer_id, self._next_seq(), channel, batch))
        if not self._woken:
            self._woken = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")
        return self._connected

    def _flush(self, sock: Any) -> None:
        out = self._out
        while out:
            frame = out.popleft()
            try:
                sock.send(frame, zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:
                self.dropped += 1
            except zmq.ZMQError as exc:
                self.dropped += 1
                self._log.warning("bus send failed: %s", exc)

    # ---- the I/O thread --------------------------------------------------------------

    def _sockets(self) -> tuple[Any, list[Any]]:
        """The socket to send on and the sockets to receive from (created by subclasses)."""
        raise NotImplementedError

    def _run(self) -> None:
        send_sock, recv_socks = self._sockets()
        poller = zmq.Poller()
        for sock in recv_socks:
            poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        next_beat = 0.0
        interval = self.heartbeat_interval
        try:
            while not self.closed:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + interval
                    self._out.append(
                        self._frames.encode(
                            MessageType.HEARTBEAT, self.peer_id, self._next_seq(), ""
                        )
                    )
                    self._tick()
                if self._out:
                    self._flush(send_sock)
                timeout_ms = max(0, int((next_beat - time.monotonic()) * 1000)) + 1
                for sock, _ in poller.poll(timeout_ms):
                    if sock == self._wake_r:
                        self._woken = False
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        continue
                    self._receive(sock)
            self._out.append(self._frames.encode(MessageType.BYE, self.peer_id, self._next_seq()))
            self._flush(send_sock)
        except Exception:
            logger.exception("bus %s: I/O thread failed", self.peer_id.hex())
        finally:
            for sock in {send_sock, *recv_socks}:
                sock.close()

    def _receive(self, sock: Any) -> None:
        for _ in range(1000):  # then let heartbeats and sends have a turn
            try:
                frame = sock.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                msg = self._frames.decode(frame)
            except InvalidFrame as exc:
                self.rejected += 1
                self._log.warning("bus %s dropped a frame: %s", self.peer_id.hex(), exc)
                continue
            self._deliver(msg)

    def close(self) -> None:
        """Say goodbye to the cluster, stop the I/O thread and close the sockets."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")
        stuck = False
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
            stuck = self._thread.is_alive()
        self._release(term=not stuck)
        with self._state_changed:
            self._connected = False
            self._state_changed.notify_all()


class BrokerBus(_ZmqBus):
    """A bus through one or more brokers (``python -m chorde.mq.broker``).

    ``BrokerBus("tcp://10.0.0.5:5555", secret="...")``. The bus connects a DEALER socket to
    every broker; each frame goes to one of the brokers that is connected, which relays it
    to every peer it knows (itself included, which is how the bus knows it is
    ``connected``). Connect every process to every broker: then any one broker is enough,
    and a broker restart is bridged by the others, or by reconnection when it comes back.
    """

    def __init__(
        self,
        brokers: str | Sequence[str],
        secret: str | bytes | Sequence[str | bytes],
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float | None = None,
        hwm: int = 10_000,
        context: Any = None,
    ) -> None:
        self.brokers = _endpoints(brokers, "brokers")
        super().__init__(
            secret,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            hwm=hwm,
            context=context,
        )
        sock = self._socket(zmq.DEALER)
        # Only hand frames to connected brokers: with several brokers a dead one is
        # skipped; with none, sends fail at once (counted) instead of piling up.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        try:
            for endpoint in self.brokers:
                sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            self._release()
            raise ConfigurationError(f"cannot connect to broker {endpoint!r}: {exc}") from exc
        self._sock = sock
        self._start("chorde-mq-broker-bus")

    def _sockets(self) -> tuple[Any, list[Any]]:
        return self._sock, [self._sock]

    def __repr__(self) -> str:
        return f"<BrokerBus {self.peer_id.hex()} brokers={self.brokers} connected={self.connected}>"


class PeerBus(_ZmqBus):
    """A broker-less bus: every process binds a PUB socket and subscribes to all the others.

    ``PeerBus("tcp://10.0.0.5:7001", ["tcp://10.0.0.5:7001", "tcp://10.0.0.6:7001"],
    secret="...")``: ``bind`` is this process's endpoint, ``peers`` every process's (its own
    may be included; it is subscribed to anyway, to hear its own heartbeats). No single
    point of failure, but each process opens a connection to every other one.
    """

    def __init__(
        self,
        bind: str,
        peers: Sequence[str],
        secret: str | bytes | Sequence[str | bytes],
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float | None = None,
        hwm: int = 10_000,
        context: Any = None,
    ) -> None:
        check_endpoint(bind, "bind")
        peer_list = [] if not peers else _endpoints(peers, "peers")
        super().__init__(
            secret,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            hwm=hwm,
            context=context,
        )
        pub = self._socket(zmq.PUB)
        sub = self._socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            pub.bind(bind)
            self.endpoint: str = pub.getsockopt_string(zmq.LAST_ENDPOINT)
            # Our own endpoint too: hearing our own heartbeats is how we know we are up.
            for endpoint in dict.fromkeys([self.endpoint, *peer_list]):
                if "*" not in endpoint:
                    sub.connect(endpoint)
        except zmq.ZMQError as exc:
            pub.close()
            sub.close()
            self._release()
            raise ConfigurationError(f"cannot bind {bind!r} or reach peers: {exc}") from exc
        self.peer_endpoints = peer_list
        self._pub = pub
        self._sub = sub
        self._start("chorde-mq-peer-bus")

    def _sockets(self) -> tuple[Any, list[Any]]:
        return self._pub, [self._sub]

    def __repr__(self) -> str:
        return f"<PeerBus {self.peer_id.hex()} at {self.endpoint} connected={self.connected}>"
