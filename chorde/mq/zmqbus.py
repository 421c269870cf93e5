"""Buses over ZeroMQ (pyzmq): through a broker, or straight between a static list of peers.

Both run one I/O thread per bus that owns the sockets (ZeroMQ sockets are not thread-safe):
``publish()`` from any thread numbers and signs the frame, queues it and wakes the thread
through a pipe. Sends never block: a frame the transport cannot take right now is dropped
and counted (``bus.dropped``), and since it was numbered its receivers notice the gap (see
:mod:`chorde.mq.bus`).

:class:`BrokerBus` watches its connections (a ZeroMQ socket monitor): when none is up it is
not ``synced`` at once, and when one comes back it sends a heartbeat at once, so that the
broker relays to it again as soon as possible. ZeroMQ's own connection heartbeats drop a
connection that stopped carrying anything (a silent network failure), so that it is made
again instead of hanging.

When a bus hears a peer that speaks an older frame format, it sends a copy of each of its
frames in that format too (see :mod:`chorde.mq.frames`), for as long as such peers are
heard: during a rolling upgrade the old processes keep receiving invalidations.
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
from chorde.mq.bus import _BEAT, Bus
from chorde.mq.frames import (
    FRAME_VERSION,
    MAX_FRAME,
    Frames,
    MessageType,
)
from chorde.serialization import RateLimitedLog

zmq = require("zmq", "mq")

__all__ = ["BrokerBus", "PeerBus", "check_endpoint"]

logger = logging.getLogger("chorde.mq")

_SCHEMES = ("tcp://", "ipc://", "inproc://")
#: After the last frame from an older-format peer, keep sending it copies this many
#: heartbeat timeouts.
_COMPAT_FOR = 10
_OLD_VERSION = 1
#: Connection events a BrokerBus watches: a link is up once its handshake succeeded.
_LINK_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CLOSED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


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
        # Until when older-format copies are sent, and their own numbering (format 1
        # numbers all frames of a sender together).
        self._compat_until = -1.0
        self._old_seq = 0
        self._beat_now = False

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
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        # A connection that carries nothing for heartbeat_timeout (a silent network failure,
        # a frozen peer) is dropped and made again; so is a handshake that never completes.
        timeout_ms = max(1, int(self.heartbeat_timeout * 1000))
        sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(self.heartbeat_interval * 1000)))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, max(100, timeout_ms))
        sock.setsockopt(zmq.HANDSHAKE_IVL, timeout_ms)
        return sock

    def _start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- sending -------------------------------------------------------------------

    def _send(self, mtype: MessageType, channel: str, items: Sequence[bytes]) -> bool:
        if self.closed:
            self.dropped += 1
            return False
        self._queue(mtype, channel, items)
        if not self._woken:
            self._woken = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")
        return self._connected

    def _queue(self, mtype: MessageType, channel: str, items: Sequence[bytes]) -> None:
        """Number, sign and queue a message (heartbeats: with the summary as items)."""
        frames = self._frames
        with self._number_lock:
            if mtype in (MessageType.HEARTBEAT, MessageType.BYE):
                items = self._summary()
            old = time.monotonic() < self._compat_until
            for batch in frames.batches(items, channel) if items else [[]]:
                seq = self._number(channel)
                self._out.append(frames.encode(mtype, self.peer_id, seq, channel, batch))
                if old:
                    self._old_seq += 1
                    copy = () if channel == _BEAT else batch
                    self._out.append(
                        frames.encode(
                            mtype, self.peer_id, self._old_seq, channel, copy, version=_OLD_VERSION
                        )
                    )

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

    def _monitor(self) -> Any:
        """A monitor socket of the connections, or None (subclasses that watch them)."""
        return None

    def _on_monitor(self, monitor: Any) -> None:
        """Read the monitor's events (subclasses that watch their connections)."""

    def _run(self) -> None:
        send_sock, recv_socks = self._sockets()
        monitor = self._monitor()
        poller = zmq.Poller()
        for sock in recv_socks:
            poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        next_beat = 0.0
        interval = self.heartbeat_interval
        try:
            while not self.closed:
                now = time.monotonic()
                if now >= next_beat or self._beat_now:
                    self._beat_now = False
                    next_beat = now + interval
                    self._queue(MessageType.HEARTBEAT, _BEAT, ())
                    self._tick()
                elif self.synced and now - self._last_echo > self.missed_after:
                    self._tick()
                if self._out:
                    self._flush(send_sock)
                wake_at = next_beat
                if self.synced:
                    wake_at = min(wake_at, self._last_echo + self.missed_after)
                timeout_ms = max(0, int((wake_at - time.monotonic()) * 1000)) + 1
                for sock, _ in poller.poll(timeout_ms):
                    if sock == self._wake_r:
                        self._woken = False
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        continue
                    if sock is monitor:
                        self._on_monitor(monitor)
                        continue
                    self._receive(sock)
            self._queue(MessageType.BYE, _BEAT, ())
            self._flush(send_sock)
        except Exception:
            logger.exception("bus %s: I/O thread failed", self.peer_id.hex())
        finally:
            if monitor is not None:
                with contextlib.suppress(zmq.ZMQError):
                    send_sock.disable_monitor()
                monitor.close(0)
            for sock in {send_sock, *recv_socks}:
                sock.close()

    def _receive(self, sock: Any) -> None:
        for _ in range(1000):  # then let heartbeats and sends have a turn
            try:
                frame = sock.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            msg = self._decoded(self._frames, self._log, frame)
            if msg is None:
                continue
            if msg.version < FRAME_VERSION and msg.sender not in self._received:
                if time.monotonic() >= self._compat_until:
                    logger.warning(
                        "bus %s hears peer %s in frame format %d: sending it copies",
                        self.peer_id.hex(),
                        msg.sender.hex(),
                        msg.version,
                    )
                self._compat_until = time.monotonic() + _COMPAT_FOR * self.heartbeat_timeout
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
            self._connected = self._synced = False
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
        # Watched from before the first connection, so that no transition is missed.
        self._monitor_sock = sock.get_monitor_socket(_LINK_EVENTS)
        self._links: set[bytes] = set()
        self._transport_up = False
        try:
            for endpoint in self.brokers:
                sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self._monitor_sock.close(0)
            sock.close()
            self._release()
            raise ConfigurationError(f"cannot connect to broker {endpoint!r}: {exc}") from exc
        self._sock = sock
        self._start("chorde-mq-broker-bus")

    def _sockets(self) -> tuple[Any, list[Any]]:
        return self._sock, [self._sock]

    def _monitor(self) -> Any:
        return self._monitor_sock

    def _on_monitor(self, monitor: Any) -> None:
        from zmq.utils.monitor import recv_monitor_message

        for _ in range(100):
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind, endpoint = event["event"], event["endpoint"]
            was_up = bool(self._links)
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._links.add(endpoint)
                # Register with that broker now rather than at the next heartbeat.
                self._beat_now = True
            else:
                self._links.discard(endpoint)
            if bool(self._links) != was_up:
                logger.info(
                    "bus %s: %s broker connection %s",
                    self.peer_id.hex(),
                    "a" if self._links else "no",
                    "up" if self._links else "left",
                )
                self._transport(bool(self._links))

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
