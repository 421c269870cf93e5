"""The bus contract (publish, subscribe, liveness) and an in-process implementation.

A bus connects the processes of a cluster. Every process has one bus (one random
``peer_id``); coherent clients subscribe to a *channel* on it and publish small messages
(:class:`~chorde.mq.frames.Message`: a type and a list of encoded keys). The bus also tells
who is alive: every bus sends heartbeats, and

* ``connected`` is True while this process hears its own heartbeats come back (the
  transport works end to end), False otherwise;
* ``peer_alive(peer)`` is True/False for a peer heard from recently/not for a while, and
  None when the bus cannot tell (never heard of it, or not connected itself).

Listeners (:meth:`Bus.add_listener`) get the transitions: ``"connected"``,
``"disconnected"``, ``"peer-joined"``, ``"peer-lost"``, ``"peer-returned"``,
``"peer-left"``.

Handlers run on the bus's thread (or the publisher's, for :class:`LocalBus`): they must be
quick and must not block.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from chorde.errors import ConfigurationError
from chorde.mq.frames import Message, MessageType

__all__ = ["Bus", "Handler", "Listener", "LocalBus", "LocalHub", "Subscription"]

logger = logging.getLogger("chorde.mq")

Handler = Callable[[Message], None]
Listener = Callable[[str, "bytes | None"], None]

# Peers silent this many heartbeat timeouts are forgotten (bounds the peer table).
_FORGET_AFTER = 100


class Subscription:
    """A handler registered on a channel; pass it to ``publish(source=)`` to skip itself."""

    __slots__ = ("channel", "handler")

    def __init__(self, channel: str, handler: Handler) -> None:
        self.channel = channel
        self.handler = handler


def _check_interval(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return float(value)


class Bus:
    """Base of every bus: subscriptions, local dispatch and liveness bookkeeping.

    Subclasses move frames (:meth:`_send`) and feed what they receive to :meth:`_deliver`,
    and call :meth:`_tick` periodically (at least every heartbeat interval).
    """

    def __init__(
        self, *, heartbeat_interval: float = 1.0, heartbeat_timeout: float | None = None
    ) -> None:
        self.heartbeat_interval = _check_interval("heartbeat_interval", heartbeat_interval)
        if heartbeat_timeout is None:
            heartbeat_timeout = 3.5 * self.heartbeat_interval
        self.heartbeat_timeout = _check_interval("heartbeat_timeout", heartbeat_timeout)
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ConfigurationError(
                f"heartbeat_timeout ({heartbeat_timeout!r}) must exceed heartbeat_interval "
                f"({heartbeat_interval!r})"
            )
        self.peer_id: bytes = os.urandom(8)
        self._subs: dict[str, tuple[Subscription, ...]] = {}
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()
        self._seen: dict[bytes, float] = {}
        self._lost: set[bytes] = set()
        self._last_echo = -math.inf
        self._connected = False
        self._state_changed = threading.Condition()
        self._seq = 0
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.rejected = 0
        self.closed = False

    # ---- public API ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while this process hears its own messages back through the transport."""
        return self._connected

    def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Call ``handler(message)`` for every message other publishers send on ``channel``."""
        if not isinstance(channel, str):
            raise TypeError(f"channel must be a str, got {channel!r}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        sub = Subscription(channel, handler)
        with self._lock:
            self._subs[channel] = (*self._subs.get(channel, ()), sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop calling a handler registered with :meth:`subscribe`."""
        with self._lock:
            rest = tuple(s for s in self._subs.get(sub.channel, ()) if s is not sub)
            if rest:
                self._subs[sub.channel] = rest
            else:
                self._subs.pop(sub.channel, None)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event, peer_id_or_None)`` on connection and peer transitions."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Forget a listener added with :meth:`add_listener`."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

    def publish(
        self,
        mtype: MessageType,
        channel: str,
        items: Sequence[bytes] = (),
        *,
        source: Subscription | None = None,
    ) -> bool:
        """Send a message to every other subscriber of ``channel``, here and in other
        processes; False when it was dropped (transport down or saturated)."""
        msg = None
        for sub in self._subs.get(channel, ()):
            if sub is not source:
                if msg is None:
                    msg = Message(mtype, self.peer_id, 0, time.time(), channel, tuple(items))
                self._call(sub, msg)
        return self._send(mtype, channel, items)

    def peer_alive(self, peer: bytes) -> bool | None:
        """True/False when the bus knows whether ``peer`` is alive, None when it cannot tell."""
        if peer == self.peer_id:
            return True
        if not self._connected:
            return None
        seen = self._seen.get(peer)
        if seen is None:
            return None
        return time.monotonic() - seen <= self.heartbeat_timeout

    def peers(self) -> list[bytes]:
        """Ids of the other peers heard from recently."""
        now = time.monotonic()
        return [p for p, t in list(self._seen.items()) if now - t <= self.heartbeat_timeout]

    def wait_connected(self, timeout: float) -> bool:
        """Block until :attr:`connected` (True) or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._state_changed:
            while not self._connected:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return self._connected
                self._state_changed.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        """Leave the cluster (others are told) and release the transport."""
        self.closed = True

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- for subclasses ----------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, mtype: MessageType, channel: str, items: Sequence[bytes]) -> bool:
        """Hand a message to the transport; False when it was dropped."""
        raise NotImplementedError

    def _deliver(self, msg: Message) -> None:
        """Account for a message received from the transport, and dispatch it."""
        now = time.monotonic()
        self.received += 1
        if msg.sender == self.peer_id:
            self._last_echo = now
            if not self._connected:
                self._set_connected(True)
            return
        if msg.type is MessageType.BYE:
            # Remembered as long gone, so peer_alive() says False rather than "unknown".
            self._seen[msg.sender] = now - self.heartbeat_timeout - 1.0
            self._lost.add(msg.sender)
            self._emit("peer-left", msg.sender)
            return
        known = msg.sender in self._seen
        self._seen[msg.sender] = now
        if not known:
            self._emit("peer-joined", msg.sender)
        elif msg.sender in self._lost:
            self._lost.discard(msg.sender)
            self._emit("peer-returned", msg.sender)
        if msg.type is MessageType.HEARTBEAT:
            return
        for sub in self._subs.get(msg.channel, ()):
            self._call(sub, msg)

    def _tick(self) -> None:
        """Re-evaluate liveness; subclasses call it at least once per heartbeat interval."""
        now = time.monotonic()
        timeout = self.heartbeat_timeout
        if self._connected and now - self._last_echo > timeout:
            self._set_connected(False)
        if not self._connected:
            return
        for peer, seen in list(self._seen.items()):
            silent = now - seen
            if silent > timeout and peer not in self._lost:
                self._lost.add(peer)
                self._emit("peer-lost", peer)
            elif silent > _FORGET_AFTER * timeout:
                self._seen.pop(peer, None)
                self._lost.discard(peer)

    def _set_connected(self, connected: bool) -> None:
        with self._state_changed:
            self._connected = connected
            self._state_changed.notify_all()
        if connected:
            # Our own silence made every peer look silent: start their clocks afresh.
            now = time.monotonic()
            for peer in list(self._seen):
                self._seen[peer] = max(self._seen.get(peer, now), now - self.heartbeat_interval)
        self._emit("connected" if connected else "disconnected", None)

    def _emit(self, event: str, peer: bytes | None) -> None:
        if event in ("connected", "disconnected"):
            level = logging.INFO if event == "connected" else logging.WARNING
            logger.log(level, "bus %s %s", self.peer_id.hex(), event)
        else:
            logger.debug("bus %s: %s %s", self.peer_id.hex(), event, peer and peer.hex())
        for listener in self._listeners:
            try:
                listener(event, peer)
            except Exception:
                logger.exception("bus listener %r failed on %s", listener, event)

    def _call(self, sub: Subscription, msg: Message) -> None:
        try:
            sub.handler(msg)
        except Exception:
            logger.exception("bus handler %r failed on a %s message", sub.handler, msg.type.name)


class LocalHub:
    """Connects :class:`LocalBus` instances of one process as if they were a cluster."""

    def __init__(self) -> None:
        self._buses: tuple[LocalBus, ...] = ()
        self._ever: set[bytes] = set()
        self._lock = threading.Lock()

    def _join(self, bus: LocalBus) -> None:
        with self._lock:
            self._buses = (*self._buses, bus)
            self._ever.add(bus.peer_id)

    def _leave(self, bus: LocalBus) -> None:
        with self._lock:
            self._buses = tuple(b for b in self._buses if b is not bus)

    def _broadcast(self, msg: Message) -> None:
        for bus in self._buses:
            if not bus._down:
                bus._deliver(msg)


class LocalBus(Bus):
    """An in-process bus: alone (a cluster of one), or joined to a :class:`LocalHub`.

    Delivery is synchronous, on the publisher's thread. :meth:`set_down` simulates a
    transport failure (tests, demos).
    """

    def __init__(self, hub: LocalHub | None = None) -> None:
        super().__init__()
        self._hub = hub if hub is not None else LocalHub()
        self._down = False
        self._hub._join(self)
        self._set_connected(True)

    @property
    def connected(self) -> bool:
        """True unless :meth:`set_down` took it down."""
        return self._connected

    def peer_alive(self, peer: bytes) -> bool | None:
        """Alive while joined to the hub, dead once it left; unknown when down or never seen."""
        if peer == self.peer_id:
            return True
        if self._down or peer not in self._hub._ever:
            return None
        return any(b.peer_id == peer and not b._down for b in self._hub._buses)

    def set_down(self, down: bool) -> None:
        """Simulate the transport going down (True) or coming back (False)."""
        if down == self._down:
            return
        self._down = down
        self._set_connected(not down)

    def _send(self, mtype: MessageType, channel: str, items: Sequence[bytes]) -> bool:
        if self._down or self.closed:
            self.dropped += 1
            return False
        msg = Message(mtype, self.peer_id, self._next_seq(), time.time(), channel, tuple(items))
        self.sent += 1
        for bus in self._hub._buses:
            if bus is not self and not bus._down:
                bus._deliver(msg)
        return True

    def _deliver(self, msg: Message) -> None:
        self.received += 1
        if msg.type is MessageType.HEARTBEAT:
            return
        for sub in self._subs.get(msg.channel, ()):
            self._call(sub, msg)

    def close(self) -> None:
        """Leave the hub."""
        if not self.closed:
            self._hub._leave(self)
        super().close()
