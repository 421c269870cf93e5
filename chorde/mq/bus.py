"""The bus contract (publish, subscribe, liveness, gaps) and an in-process implementation.

A bus connects the processes of a cluster. Every process has one bus (one random
``peer_id``); coherent clients subscribe to a *channel* on it and publish small messages
(:class:`~chorde.mq.frames.Message`: a type and a list of encoded keys). The bus also tells
who is alive and whether anything may have been lost:

* ``connected`` is True while this process hears its own heartbeats come back (the
  transport works end to end), False otherwise;
* ``synced`` is True while no message sent to this process can have been lost unnoticed:
  the transport is up and the last heartbeat came back on time. It turns False at once when
  the transport reports the connection down, and after a missed heartbeat (no echo for two
  heartbeat intervals); it turns True again when an echo arrives. Whatever was sent to this
  process in between may be lost: a subscriber that caches what messages invalidate treats
  the return to ``synced`` as "drop everything";
* a **gap** on a channel is a lost message noticed afterwards: every sender numbers its
  frames per channel, and its heartbeats say the number of its last frame on each channel,
  so a missing number is noticed at the next frame or heartbeat of that sender (and a
  sender that goes silent for ``heartbeat_timeout`` counts as a gap on every channel it
  published on). Subscribers learn of gaps on their channel through ``on_gap``;
* ``peer_alive(peer)`` is True/False for a peer heard from recently/not for a while (while
  this process kept hearing itself), and None when the bus cannot tell.

Listeners (:meth:`Bus.add_listener`) get the transitions: ``"connected"``,
``"disconnected"``, ``"synced"``, ``"unsynced"``, ``"peer-joined"``, ``"peer-lost"``,
``"peer-returned"``, ``"peer-left"``.

Handlers run on the bus's thread (or the publisher's, for :class:`LocalBus`): they must be
quick and must not block.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from chorde.errors import ConfigurationError
from chorde.mq.frames import (
    FRAME_VERSION,
    Frames,
    InvalidFrame,
    Message,
    MessageType,
    UnsupportedVersion,
    decode_summary,
    encode_summary,
)

__all__ = ["Bus", "GapHandler", "Handler", "Listener", "LocalBus", "LocalHub", "Subscription"]

logger = logging.getLogger("chorde.mq")

Handler = Callable[[Message], None]
GapHandler = Callable[[str], None]
Listener = Callable[[str, "bytes | None"], None]

# Peers silent this many heartbeat timeouts are forgotten (bounds the peer table).
_FORGET_AFTER = 100
# Heartbeats travel on this channel; its numbers are not part of a summary.
_BEAT = ""


class Subscription:
    """A handler registered on a channel; pass it to ``publish(source=)`` to skip itself."""

    __slots__ = ("channel", "handler", "on_gap")

    def __init__(self, channel: str, handler: Handler, on_gap: GapHandler | None = None) -> None:
        self.channel = channel
        self.handler = handler
        self.on_gap = on_gap


def _check_interval(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return float(value)


class Bus:
    """Base of every bus: subscriptions, local dispatch, numbering, liveness and gaps.

    Subclasses move frames (:meth:`_send`, numbering each with :meth:`_number`) and feed
    what they receive to :meth:`_deliver`, call :meth:`_tick` at least once per heartbeat
    interval, and :meth:`_transport` when their connection goes down or comes back.
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
        #: No echo for this long is a missed heartbeat: the bus is no longer ``synced``.
        self.missed_after = min(2 * self.heartbeat_interval, self.heartbeat_timeout)
        self.peer_id: bytes = os.urandom(8)
        self._subs: dict[str, tuple[Subscription, ...]] = {}
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()
        # Liveness: when each peer was last heard from, and those considered lost.
        self._seen: dict[bytes, float] = {}
        self._lost: set[bytes] = set()
        # Numbering: the last number received per sender and channel (format 2), per
        # sender (format 1), and the last number sent per channel.
        self._received: dict[bytes, dict[str, int]] = {}
        self._received_v1: dict[bytes, int] = {}
        self._numbered: dict[str, int] = {}
        self._number_lock = threading.Lock()
        self._last_echo = -math.inf
        self._connected = False
        self._synced = False
        self._transport_up = True
        self._state_changed = threading.Condition()
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.rejected = 0
        #: Gaps noticed so far (each one made the subscribers of a channel drop their copies).
        self.gaps = 0
        self.closed = False

    # ---- public API ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while this process hears its own messages back through the transport."""
        return self._connected

    @property
    def synced(self) -> bool:
        """True while no message sent to this process can have been lost unnoticed."""
        return self._synced

    def subscribe(
        self, channel: str, handler: Handler, *, on_gap: GapHandler | None = None
    ) -> Subscription:
        """Call ``handler(message)`` for every message other publishers send on ``channel``,
        and ``on_gap(channel)`` when one of them may have been lost."""
        if not isinstance(channel, str):
            raise TypeError(f"channel must be a str, got {channel!r}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        if on_gap is not None and not callable(on_gap):
            raise TypeError(f"on_gap must be callable, got {on_gap!r}")
        sub = Subscription(channel, handler, on_gap)
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
        if time.monotonic() - seen <= self.heartbeat_timeout:
            return True
        # Silent that long: dead only if our own heartbeats kept coming back meanwhile.
        return False if self._last_echo - seen > self.heartbeat_timeout else None

    def peers(self) -> list[bytes]:
        """Ids of the other peers heard from recently."""
        now = time.monotonic()
        return [p for p, t in list(self._seen.items()) if now - t <= self.heartbeat_timeout]

    def wait_connected(self, timeout: float) -> bool:
        """Block until :attr:`connected` (True) or ``timeout`` seconds passed (False)."""
        return self._wait_for(lambda: self._connected, timeout)

    def wait_synced(self, timeout: float) -> bool:
        """Block until :attr:`synced` (True) or ``timeout`` seconds passed (False)."""
        return self._wait_for(lambda: self._synced, timeout)

    def close(self) -> None:
        """Leave the cluster (others are told) and release the transport."""
        self.closed = True

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- sending (for subclasses) -------------------------------------------------------

    def _number(self, channel: str) -> int:
        """The next number on ``channel``; call it under :attr:`_number_lock`, together
        with queueing the frame, so that numbers go out in order."""
        seq = self._numbered.get(channel, 0) + 1
        self._numbered[channel] = seq
        return seq

    def _summary(self) -> list[bytes]:
        """A heartbeat's items: the last number sent on every channel but the heartbeats'."""
        return encode_summary({c: n for c, n in self._numbered.items() if c != _BEAT})

    def _send(self, mtype: MessageType, channel: str, items: Sequence[bytes]) -> bool:
        """Number and hand a message to the transport; False when it was dropped."""
        raise NotImplementedError

    # ---- receiving (for subclasses) ------------------------------------------------------

    def _decoded(self, frames: Frames, log: Any, frame: bytes) -> Message | None:
        """The message a transport received in ``frame``, or None (counted as rejected and
        logged through ``log``) when ``frames`` cannot read it."""
        try:
            return frames.decode(frame)
        except UnsupportedVersion as exc:
            self.rejected += 1
            log.warning(
                "bus %s cannot read a newer peer's frames (%s): upgrade this process",
                self.peer_id.hex(),
                exc,
            )
            if exc.sender not in self._received:
                # A trusted peer we cannot read may have invalidated anything.
                self._gap(None, f"unreadable frame from peer {exc.sender.hex()}")
        except InvalidFrame as exc:
            self.rejected += 1
            log.warning("bus %s dropped a frame: %s", self.peer_id.hex(), exc)
        return None

    def _deliver(self, msg: Message) -> None:
        """Account for a message received from the transport, and dispatch it."""
        now = time.monotonic()
        self.received += 1
        sender = msg.sender
        if sender == self.peer_id:
            self._last_echo = now
            if not self._connected:
                self._set_connected(True)
            if not self._synced and self._transport_up:
                self._set_synced(True, "heartbeats come back")
            return
        if msg.version < FRAME_VERSION:
            if sender in self._received:
                return  # a newer peer's copy for older peers: we read its own frame
            self._check_v1(msg)
        elif not self._check_numbers(msg):
            return
        if msg.type is MessageType.BYE:
            # Remembered as long gone, so peer_alive() says False rather than "unknown"
            # (and its numbers with it, until forgotten: copies of its last frames may follow).
            self._seen[sender] = now - self.heartbeat_timeout - 1.0
            self._lost.add(sender)
            self._emit("peer-left", sender)
            return
        known = sender in self._seen
        self._seen[sender] = now
        if not known:
            self._emit("peer-joined", sender)
        elif sender in self._lost:
            self._lost.discard(sender)
            self._emit("peer-returned", sender)
        if msg.type is MessageType.HEARTBEAT:
            return
        for sub in self._subs.get(msg.channel, ()):
            self._call(sub, msg)

    def _check_numbers(self, msg: Message) -> bool:
        """Notice the frames of this sender that never arrived; False if ``msg`` is bad."""
        last = self._received.get(msg.sender)
        if last is None:
            # First contact: everything it numbered before may have been missed (0 is
            # "nothing sent yet", what a new process's first frames say).
            last = self._received[msg.sender] = {}
        summary: dict[str, int] = {}
        if msg.type in (MessageType.HEARTBEAT, MessageType.BYE):
            try:
                summary = decode_summary(msg.items)
            except InvalidFrame as exc:
                self.rejected += 1
                logger.warning("bus %s dropped a frame: %s", self.peer_id.hex(), exc)
                return False
        missed = []
        before = last.get(msg.channel, 0)
        if msg.seq > before:
            last[msg.channel] = msg.seq
            if msg.seq > before + 1:
                missed.append(msg.channel)
        for channel, seq in summary.items():
            # "My last frame there was #seq": frames arrive in order, so it is here already.
            before = last.get(channel, 0)
            if seq > before and channel != msg.channel:
                last[channel] = seq
                missed.append(channel)
        if missed:
            self._gap(missed, f"frames from peer {msg.sender.hex()} never arrived")
        return True

    def _check_v1(self, msg: Message) -> None:
        """A format-1 peer numbers all its frames together: a gap could be on any channel."""
        before = self._received_v1.get(msg.sender, 0)
        if msg.seq > before:
            self._received_v1[msg.sender] = msg.seq
            if msg.seq > before + 1:
                self._gap(None, f"frames from format-1 peer {msg.sender.hex()} never arrived")

    def _gap(self, channels: Iterable[str] | None, reason: str) -> None:
        """Tell the subscribers of ``channels`` (None: every channel) they may have missed
        messages."""
        subs = self._subs
        names = list(subs) if channels is None else [c for c in channels if c in subs]
        if not names:
            return
        self.gaps += 1
        logger.info("bus %s: gap on %s: %s", self.peer_id.hex(), names, reason)
        for channel in names:
            for sub in subs.get(channel, ()):
                if sub.on_gap is not None:
                    try:
                        sub.on_gap(channel)
                    except Exception:
                        logger.exception("gap handler %r failed on %r", sub.on_gap, channel)

    # ---- liveness (for subclasses) -------------------------------------------------------

    def _tick(self) -> None:
        """Re-evaluate liveness; subclasses call it at least once per heartbeat interval."""
        now = time.monotonic()
        timeout = self.heartbeat_timeout
        silent = now - self._last_echo
        if self._synced and silent > self.missed_after:
            self._set_synced(False, "a heartbeat did not come back")
        if self._connected and silent > timeout:
            self._set_connected(False)
        if not self._connected:
            return
        for peer, seen in list(self._seen.items()):
            if peer in self._lost:
                if now - seen > _FORGET_AFTER * timeout:
                    self._seen.pop(peer, None)
                    self._lost.discard(peer)
                    self._received.pop(peer, None)
                    self._received_v1.pop(peer, None)
            elif now - seen > timeout and self._last_echo - seen > timeout:
                self._lost.add(peer)
                self._emit("peer-lost", peer)
                # Its last frames may be lost with it, and no heartbeat will tell.
                channels = self._received.get(peer)
                self._gap(
                    None if peer in self._received_v1 else list(channels or ()),
                    f"peer {peer.hex()} went silent",
                )

    def _transport(self, up: bool) -> None:
        """The transport's connection went down (nothing can arrive) or came back."""
        self._transport_up = up
        if not up:
            if self._synced:
                self._set_synced(False, "the connection is down")
            if self._connected:
                self._set_connected(False)

    def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._state_changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return predicate()
                self._state_changed.wait(min(left, 0.05))
        return True

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

    def _set_synced(self, synced: bool, reason: str) -> None:
        with self._state_changed:
            self._synced = synced
            self._state_changed.notify_all()
        logger.info("bus %s %s: %s", self.peer_id.hex(), "synced" if synced else "unsynced", reason)
        self._emit("synced" if synced else "unsynced", None)

    def _emit(self, event: str, peer: bytes | None) -> None:
        if event in ("connected", "disconnected"):
            level = logging.INFO if event == "connected" else logging.WARNING
            logger.log(level, "bus %s %s", self.peer_id.hex(), event)
        elif peer is not None:
            logger.debug("bus %s: %s %s", self.peer_id.hex(), event, peer.hex())
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
        # Numbering and delivery together, so frames arrive in the order they are numbered
        # (re-entrant: a handler may publish).
        self._order = threading.RLock()

    def _join(self, bus: LocalBus) -> None:
        with self._lock:
            self._buses = (*self._buses, bus)
            self._ever.add(bus.peer_id)

    def _leave(self, bus: LocalBus) -> None:
        with self._lock:
            self._buses = tuple(b for b in self._buses if b is not bus)

    def _broadcast(self, sender: LocalBus, msg: Message) -> None:
        for bus in self._buses:
            if bus is not sender and not bus._down:
                bus._deliver(msg)


class LocalBus(Bus):
    """An in-process bus: alone (a cluster of one), or joined to a :class:`LocalHub`.

    Delivery is synchronous, on the publisher's thread, and numbered like the network
    buses' so that gaps behave the same. :meth:`set_down` simulates a transport failure
    (tests, demos): messages to and from a bus that is down are lost, and when it comes
    back it sends a heartbeat, from which the others learn what they missed.
    """

    def __init__(self, hub: LocalHub | None = None) -> None:
        super().__init__()
        self._hub = hub if hub is not None else LocalHub()
        self._down = False
        self._hub._join(self)
        self._set_up()

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
        if down:
            self._transport(False)
        else:
            self._set_up()

    def _set_up(self) -> None:
        self._transport_up = True
        self._set_connected(True)
        self._set_synced(True, "up")
        self._send(MessageType.HEARTBEAT, _BEAT, ())

    def _send(self, mtype: MessageType, channel: str, items: Sequence[bytes]) -> bool:
        if self.closed:
            self.dropped += 1
            return False
        with self._hub._order:
            with self._number_lock:
                seq = self._number(channel)
                if mtype is MessageType.HEARTBEAT:
                    items = self._summary()
            if self._down:
                self.dropped += 1
                return False
            msg = Message(mtype, self.peer_id, seq, time.time(), channel, tuple(items))
            self.sent += 1
            self._hub._broadcast(self, msg)
        return True

    def close(self) -> None:
        """Leave the hub."""
        if not self.closed:
            self._hub._leave(self)
        super().close()
