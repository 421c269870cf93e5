"""A bus over Redis (or Valkey) pub/sub: coherence for a cluster that runs Redis already.

``RedisBus(l2, secret="...")`` where ``l2`` is the
:class:`~chorde.clients.redis.RedisClient` of the shared tier (or a Redis URL, or a
redis-py / valkey-py client object). Redis plays the broker's part: every process
subscribes to one Redis pub/sub channel (``redis_channel``) and publishes its frames there,
and Redis relays each frame to every subscriber, the sender included. The frames,
their numbering, heartbeats, gaps and the ``synced`` state are those of every bus
(:mod:`chorde.mq.bus`, :mod:`chorde.mq.frames`): signed, keys only, nothing unpickled.

Two threads per bus, both daemons:

* the **subscriber** owns the subscription's connection (a connection of its own, held
  while subscribed): it reads frames and delivers them, sends a heartbeat every
  ``heartbeat_interval`` and notices a missed one;
* the **publisher** sends the queued frames, pipelined (one round trip per batch, in the
  order they were numbered). ``publish()`` only numbers, signs and queues a frame, so it
  never waits for Redis; past ``hwm`` queued frames a frame is dropped and counted
  (``bus.dropped``), and, being numbered, noticed as a gap by its receivers.

What a fault does:

* the subscription's connection drops (Redis killed or restarted, a reset): the bus is not
  ``synced`` at once, and subscribes again every 0.1-1 s; once subscribed it sends a
  heartbeat at once, and when that comes back it is synced (coherent clients drop their
  L1, since whatever was published meanwhile never reached it);
* a ``PUBLISH`` fails or times out (Redis frozen, a link losing bytes; a heartbeat goes
  out every interval, so this is noticed within an interval and a timeout): not synced
  either, until a publish succeeds again and its heartbeat comes back; a heartbeat that
  does not come back within two intervals unsyncs it too;
* Redis disconnects a subscriber that reads too slowly (``client-output-buffer-limit
  pubsub``): a reconnection, as above;
* nothing of its own comes back through the subscription for ``heartbeat_timeout`` (a
  connection dead without a word): it is given up and made again, as above.

Timeouts are the client's: a :class:`~chorde.clients.redis.RedisClient`'s
``connect_timeout`` and ``timeout`` (0.5 s, 1 s), so no publish waits longer on a hung
server. A client object of your own should have a ``socket_timeout`` for the same reason.

Redis pub/sub channels are server-wide (not per database): clusters that share a Redis use
a ``redis_channel`` each. A Redis Cluster relays a ``PUBLISH`` to every node, so a
cluster client works as well (each process subscribes on one node).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from chorde.errors import ConfigurationError
from chorde.mq.bus import _BEAT, Bus
from chorde.mq.frames import (
    FRAME_VERSION,
    Frames,
    Message,
    MessageType,
)
from chorde.serialization import RateLimitedLog

__all__ = ["RedisBus"]

logger = logging.getLogger("chorde.mq")

#: The Redis channel every process of a cluster uses unless told otherwise.
DEFAULT_CHANNEL = "chorde.mq"
#: Frames sent per pipeline (one round trip).
_BATCH = 512
#: Longest the subscriber waits for a frame before it looks at its clock (and at close()).
_POLL = 0.2
#: Pauses between attempts to subscribe again, growing from the first to the second.
_RECONNECT = (0.1, 1.0)
#: Frames the subscriber reads in a row before it looks at its clock again.
_READ_BURST = 1000


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and "://" in value


class RedisBus(Bus):
    """A bus whose frames travel through Redis pub/sub; see the module docstring.

    :param redis: where to publish and subscribe: a
        :class:`~chorde.clients.redis.RedisClient` (the shared tier's, typically: same
        servers, credentials and timeouts; the bus does not close it), a Redis URL as
        :func:`chorde.clients.from_url` takes (``redis://``, ``rediss://``,
        ``redis+sentinel://``, ``redis+cluster://``, ``valkey://`` ...; the bus owns that
        client and closes it), or a redis-py / valkey-py client object (not closed).
    :param secret: signs and verifies frames (a list rotates: sign with the first, accept
        any); the same in every process.
    :param redis_channel: the Redis pub/sub channel of this cluster (coherent clients'
        channels travel inside it).
    :param heartbeat_interval: how often this process says it is alive (and how soon a
        lost frame is noticed when nothing else is sent).
    :param heartbeat_timeout: a process not heard from for this long is gone (3.5
        intervals).
    :param hwm: frames queued for sending at most; more are dropped (and noticed as gaps).
    """

    def __init__(
        self,
        redis: Any,
        secret: str | bytes | Sequence[str | bytes],
        *,
        redis_channel: str = DEFAULT_CHANNEL,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float | None = None,
        hwm: int = 10_000,
    ) -> None:
        super().__init__(heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout)
        if not isinstance(redis_channel, str) or not redis_channel:
            raise ConfigurationError(
                f"redis_channel must be a non-empty str, got {redis_channel!r}"
            )
        if isinstance(hwm, bool) or not isinstance(hwm, int) or hwm <= 0:
            raise ConfigurationError(f"hwm must be a positive int, got {hwm!r}")
        self._frames = Frames(secret)
        self.redis_channel = redis_channel
        self._hwm = hwm
        self._owned: Any = None
        self._source, self.where = self._resolve(redis, secret)
        self._log = RateLimitedLog(logger, interval=30.0)
        # Transport state, changed by both threads under one lock (with the deliveries
        # that read it): up while subscribed and the last publish went through.
        self._state = threading.RLock()
        self._subscribed = False
        self._publishing = True
        self._transport_up = False
        self._out: collections.deque[bytes] = collections.deque()
        self._out_ready = threading.Condition()
        self._subscriber = threading.Thread(
            target=self._listen, name="chorde-mq-redis-sub", daemon=True
        )
        self._publisher = threading.Thread(
            target=self._publish_loop, name="chorde-mq-redis-pub", daemon=True
        )
        self._subscriber.start()
        self._publisher.start()

    def _resolve(self, redis: Any, secret: Any) -> tuple[Any, str]:
        """A callable returning the redis-py client to use, and a name for it."""
        if _is_url(redis):
            from chorde.clients.urls import from_url

            client: Any = from_url(redis, checksum_key=secret)
            if not callable(getattr(client, "redis_client", None)):
                client.close()
                raise ConfigurationError(
                    f"redis must be a Redis URL (redis://, rediss://, redis+sentinel://, "
                    f"redis+cluster://, valkey://...), got {redis!r}"
                )
            self._owned = client
            return client.redis_client, repr(client)
        if callable(getattr(redis, "redis_client", None)):
            return redis.redis_client, repr(redis)
        if callable(getattr(redis, "pubsub", None)) and callable(getattr(redis, "publish", None)):
            encoder = getattr(redis, "get_encoder", None)
            if callable(encoder) and getattr(encoder(), "decode_responses", False):
                raise ConfigurationError(
                    "redis must be a client with decode_responses=False: the bus's frames "
                    f"are binary, got {redis!r}"
                )
            return (lambda: redis), type(redis).__name__
        raise ConfigurationError(
            "redis must be a RedisClient, a Redis URL or a redis-py/valkey-py client object, "
            f"got {redis!r}"
        )

    # ---- sending -------------------------------------------------------------------

    def _send(self, mtype: MessageType, channel: str, items: Sequence[bytes]) -> bool:
        if self.closed:
            self.dropped += 1
            return False
        kept = self._queue(mtype, channel, items)
        return kept and self._connected

    def _queue(self, mtype: MessageType, channel: str, items: Sequence[bytes]) -> bool:
        """Number, sign and queue a message (heartbeats: their summary as items); False
        when a frame of it was dropped (the queue is full)."""
        frames = self._frames
        kept = True
        with self._number_lock:
            if mtype in (MessageType.HEARTBEAT, MessageType.BYE):
                items = self._summary()
            for batch in frames.batches(items, channel) if items else [[]]:
                frame = frames.encode(mtype, self.peer_id, self._number(channel), channel, batch)
                if len(self._out) < self._hwm:
                    self._out.append(frame)
                else:
                    self.dropped += 1
                    kept = False
        with self._out_ready:
            self._out_ready.notify()
        return kept

    def _publish_loop(self) -> None:
        """The publisher thread: send what is queued, in order, until closed and drained."""
        out = self._out
        while True:
            with self._out_ready:
                if not out and not self.closed:
                    self._out_ready.wait(self.heartbeat_interval)
            if not out:
                if self.closed:
                    return
                continue
            batch = [out.popleft() for _ in range(min(len(out), _BATCH))]
            if not self._flush(batch) and self.closed:
                # Closing, and Redis is not taking anything: the rest would fail as slowly.
                self.dropped += len(out)
                out.clear()
                return

    def _flush(self, batch: list[bytes]) -> bool:
        """Publish ``batch`` in one round trip; False when it failed (all of it dropped)."""
        try:
            client = self._source()
            if _is_cluster(client):
                # A cluster relays a PUBLISH to every node: any node takes it.
                for frame in batch:
                    client.publish(self.redis_channel, frame)
            else:
                pipe = client.pipeline(transaction=False)
                for frame in batch:
                    pipe.publish(self.redis_channel, frame)
                pipe.execute()
        except Exception as exc:
            self.dropped += len(batch)
            self._log.warning(
                "bus %s: publishing to %s failed: %s: %s",
                self.peer_id.hex(),
                self.where,
                type(exc).__name__,
                exc,
            )
            self._set_link(publishing=False)
            return False
        self.sent += len(batch)
        if not self._publishing:
            self._set_link(publishing=True)
        return True

    # ---- the subscriber thread ---------------------------------------------------------

    def _listen(self) -> None:
        pubsub: Any = None
        since = 0.0  # when the current subscription was made
        pause = _RECONNECT[0]
        next_beat = 0.0
        try:
            while not self.closed:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.heartbeat_interval
                    self._queue(MessageType.HEARTBEAT, _BEAT, ())
                    with self._state:
                        self._tick()
                elif self.synced and now - self._last_echo > self.missed_after:
                    with self._state:
                        self._tick()
                silent = now - max(since, self._last_echo)
                if pubsub is not None and silent > self.heartbeat_timeout:
                    # Nothing of ours came back for that long: the connection may be dead
                    # without a word (a silent network failure, a stream gone astray),
                    # which only a new one can tell.
                    self._drop(pubsub, "no heartbeat came back through it")
                    pubsub = None
                if pubsub is None:
                    pubsub = self._subscribe()
                    if pubsub is None:
                        self._sleep(min(pause, next_beat - time.monotonic()))
                        pause = min(pause * 2, _RECONNECT[1])
                        continue
                    since = time.monotonic()
                    pause = _RECONNECT[0]
                wake_at = next_beat
                if self.synced:
                    wake_at = min(wake_at, self._last_echo + self.missed_after)
                wait = min(max(0.0, wake_at - time.monotonic()), _POLL)
                try:
                    self._read(pubsub, wait)
                except Exception as exc:
                    self._drop(pubsub, f"{type(exc).__name__}: {exc}")
                    pubsub = None
        except Exception:
            logger.exception("bus %s: subscriber thread failed", self.peer_id.hex())
        finally:
            if pubsub is not None:
                _close_quietly(pubsub)

    def _drop(self, pubsub: Any, reason: str) -> None:
        """Give a subscription up (a new one is made next)."""
        if not self.closed:
            self._log.warning(
                "bus %s: the subscription to %s failed (%s): subscribing again",
                self.peer_id.hex(),
                self.where,
                reason,
            )
        self._set_link(subscribed=False)
        _close_quietly(pubsub)

    def _subscribe(self) -> Any:
        """A new subscription (its confirmation arrives as a message), or None."""
        pubsub = None
        try:
            pubsub = self._source().pubsub()
            pubsub.subscribe(self.redis_channel)
        except Exception as exc:
            self._log.warning(
                "bus %s: cannot subscribe to %s: %s: %s",
                self.peer_id.hex(),
                self.where,
                type(exc).__name__,
                exc,
            )
            if pubsub is not None:
                _close_quietly(pubsub)
            return None
        return pubsub

    def _read(self, pubsub: Any, wait: float) -> None:
        """Deliver what arrives within ``wait`` seconds (a burst at most)."""
        reply = pubsub.get_message(timeout=wait)
        for _ in range(_READ_BURST):
            if reply is None:
                return
            kind = reply.get("type")
            if kind == "message":
                self._receive(reply.get("data"))
            elif kind == "subscribe":
                if self._subscribed:
                    # The client library reconnected and subscribed again by itself:
                    # whatever was published in between never reached us.
                    self._set_link(subscribed=False)
                self._set_link(subscribed=True)
            reply = pubsub.get_message(timeout=0.0)

    def _receive(self, frame: Any) -> None:
        if not isinstance(frame, bytes):
            self.rejected += 1
            return
        msg = self._decoded(self._frames, self._log, frame)
        if msg is not None:
            self._deliver(msg)

    def _deliver(self, msg: Message) -> None:
        # Under the state lock: the publisher thread may find the transport down meanwhile.
        with self._state:
            if msg.version < FRAME_VERSION:
                # No earlier format ever travelled over Redis: a forgery or garbage.
                self.rejected += 1
                return
            super()._deliver(msg)

    def _set_link(self, *, subscribed: bool | None = None, publishing: bool | None = None) -> None:
        """Record what the subscriber or the publisher found; the transport is up while
        both work."""
        with self._state:
            if subscribed is not None:
                self._subscribed = subscribed
            if publishing is not None:
                self._publishing = publishing
            up = self._subscribed and self._publishing
            if subscribed and not self._publishing:
                # Subscribed again after a failed publish: try publishing now (a heartbeat)
                # rather than at the next interval.
                self._queue(MessageType.HEARTBEAT, _BEAT, ())
            if up == self._transport_up:
                return
            logger.info(
                "bus %s: %s %s",
                self.peer_id.hex(),
                self.where,
                "reachable" if up else "not reachable",
            )
            self._transport(up)
            if up:
                # Be heard (and learn we are synced) now rather than at the next heartbeat.
                self._queue(MessageType.HEARTBEAT, _BEAT, ())

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while not self.closed:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, _POLL))

    # ---- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Say goodbye to the cluster, stop both threads and release the connections."""
        if self.closed:
            return
        self._queue(MessageType.BYE, _BEAT, ())
        self.closed = True
        with self._out_ready:
            self._out_ready.notify_all()
        current = threading.current_thread()
        for thread in (self._publisher, self._subscriber):
            if thread is not current:
                thread.join(timeout=5)
                if thread.is_alive():
                    logger.warning("bus %s: %s did not stop in time", self.peer_id.hex(), thread)
        if self._owned is not None:
            with contextlib.suppress(Exception):
                self._owned.close()
        with self._state_changed:
            self._connected = self._synced = False
            self._state_changed.notify_all()

    def __repr__(self) -> str:
        return (
            f"<RedisBus {self.peer_id.hex()} {self.redis_channel!r} on {self.where} "
            f"connected={self.connected}>"
        )


def _is_cluster(client: Any) -> bool:
    return hasattr(client, "nodes_manager") and hasattr(client, "get_node_from_key")


def _close_quietly(pubsub: Any) -> None:
    with contextlib.suppress(Exception):
        pubsub.close()
