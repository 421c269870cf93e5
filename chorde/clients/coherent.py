"""Cluster coherence for a tiered cache: compute once per cluster, invalidate every L1.

``CoherentWrapperClient(client, bus)`` wraps a stack whose last tier is shared by every
process of the cluster (memcached, typically) and whose other tiers are private to this
process (an in-process L1)::

    stack = TieredInclusiveClient(InprocCacheClient(10_000), MemcachedClient([...], key))
    bus = BrokerBus("tcp://10.0.0.5:5555", secret="...")   # chorde.mq
    client = CoherentWrapperClient(stack, bus, channel="app")

What it adds to the stack:

* **Invalidation broadcast.** ``put``/``delete``/``expire``/``add``/``putMulti`` write the
  shared tier first, then the private ones, then publish the keys on the bus; every other
  process drops its private copies of them. ``clear`` makes them drop everything. A read
  that raced with an invalidation (it fetched the old value from the shared tier just
  before the new one landed) does not leave that old value in L1: invalidations are
  numbered and a promotion they overtook is undone.
* **Gaps drop L1.** Messages can be lost (a broker restart, a saturated queue, a network
  failure). The bus numbers every frame, so a lost one is noticed at the next frame or
  heartbeat of its sender: the private tiers of that channel are then cleared. While the
  bus may be losing messages right now (its connection is down, or a heartbeat did not come
  back: ``bus.synced`` is False) reads and writes go to the shared tier only, so nothing
  stale is served from L1; when it is synced again the private tiers are cleared and used
  again. See :mod:`chorde.mq.bus` for the exact rules.
* **Compute once per cluster.** :meth:`compute_once` returns a live value from the shared
  tier, or claims the computation with an atomic ``add`` of a lock entry in the shared tier
  and computes, or waits for whoever holds the claim: the holder's ``put`` wakes the
  waiters through the bus, and they poll the shared tier meanwhile (so a lost message, or
  no bus at all, only slows them down). A claim is a **lease** of ``lease`` seconds that a
  thread of the holder renews while it computes: a holder that dies (or is frozen, or
  loses the shared tier) stops renewing, and a waiter claims the computation when the lease
  runs out. The bus plays no part in that decision, so a bus outage never starts a second
  computation. A waiter that waited ``timeout`` seconds for a live holder starts one more
  computation (one per ``timeout`` of waiting, in the whole cluster). When computations
  overlap, the first result stored is the one every later finisher returns (unless
  ``recheck`` is None). A computation that fails releases the claim and wakes the waiters;
  one of them tries in turn. ``@cached`` uses :meth:`compute_once` when the client has it.

Keys must be encodable by :func:`chorde.keys.encode_key` (they cross process boundaries).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from chorde.clients.base import BaseCacheClient, CacheStats, ClientWrapper, check_ttl
from chorde.clients.tiered import TieredInclusiveClient, _fall_through_multi
from chorde.errors import CacheMissError, ConfigurationError
from chorde.keys import decode_key, encode_key
from chorde.leases import HIT, LeaseRead, offered
from chorde.mq.bus import Bus
from chorde.mq.frames import Message, MessageType
from chorde.sentinel import NONE
from chorde.serialization import RateLimitedLog

__all__ = ["CoherentWrapperClient"]

logger = logging.getLogger("chorde.coherent")

_MISS: Any = object()
_LOCK_TAG = "chorde.coherent.lock"
#: Extra computations started by impatient waiters, per computation, before computing
#: uncoordinated.
_MAX_EPOCHS = 8
#: Invalidated keys remembered to catch promotions they overtook.
_RECENT = 4096
#: Rounds in a row where the lock was neither claimable nor held (shared tier failing).
_MAX_VANISHED = 3
#: A claim is renewed this many times per lease.
_RENEWALS_PER_LEASE = 3


class _Flight:
    """One in-process computation of a key by :meth:`CoherentWrapperClient.compute_once`."""

    __slots__ = ("future", "owner")

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


def _step(
    gen: Generator[tuple[Any, ...], Any, Any], send: Any = None, throw: BaseException | None = None
) -> tuple[Any, ...]:
    """Advance the protocol generator; its return value comes back as ``("done", value)``."""
    try:
        if throw is not None:
            return gen.throw(throw)
        return gen.send(send)
    except StopIteration as stop:
        return ("done", stop.value)


class _Claims:
    """The computation claims this process holds in the shared tier, kept alive by a thread.

    Every ``lease / 3`` seconds the thread renews each claim that is still this process's
    (a lapsed one that nobody took is taken back; one that another process took is left to
    it). It runs only while claims are held.
    """

    def __init__(self, shared: BaseCacheClient, lease: float, channel: str) -> None:
        self._shared = shared
        self.lease = lease
        self._channel = channel
        self._held: dict[tuple[Any, ...], tuple[str, str]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._log = RateLimitedLog(logger, interval=30.0)

    def claim(self, lock: tuple[Any, ...], claim: tuple[str, str]) -> bool:
        """Try to take ``lock`` (atomic ``add``); keep it alive if taken."""
        if not self._shared.add(lock, claim, self.lease):
            return False
        with self._cond:
            self._held[lock] = claim
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="chorde-coherent-claims", daemon=True
                )
                self._thread.start()
        return True

    def release(self, lock: tuple[Any, ...], claim: tuple[str, str]) -> None:
        """Stop renewing ``lock`` and delete it if it is still ours."""
        with self._cond:
            if self._held.get(lock) == claim:
                del self._held[lock]
        if self._shared.get(lock, None) == claim:
            self._shared.delete(lock)

    def close(self) -> None:
        """Release every claim held (waiters elsewhere take over at once) and stop."""
        with self._cond:
            self._closed = True
            held = list(self._held.items())
            self._cond.notify_all()
        for lock, claim in held:
            with contextlib.suppress(Exception):
                self.release(lock, claim)

    def _run(self) -> None:
        period = self.lease / _RENEWALS_PER_LEASE
        while True:
            with self._cond:
                if self._held and not self._closed:
                    self._cond.wait(period)
                if not self._held or self._closed:
                    self._thread = None
                    return
                held = list(self._held.items())
            for lock, claim in held:
                try:
                    self._renew(lock, claim)
                except Exception as exc:
                    self._log.warning(
                        "coherence channel %r: renewing a claim failed: %s", self._channel, exc
                    )

    def _renew(self, lock: tuple[Any, ...], claim: tuple[str, str]) -> None:
        holder = self._shared.get(lock, None)
        if holder == claim:
            self._shared.renew(lock, self.lease)
        elif holder is None:
            self._shared.add(lock, claim, self.lease)  # lapsed, and nobody took it: ours again
        else:
            with self._cond:
                if self._held.get(lock) == claim:
                    del self._held[lock]


class CoherentWrapperClient(ClientWrapper):
    """A tiered stack kept coherent across processes through a bus; see the module docstring.

    :param client: the stack. A :class:`TieredInclusiveClient` is split into private tiers
        (all but the last) and the shared tier (the last); any other client is taken as the
        shared tier alone (compute-once only, no L1 to invalidate). ``capacity`` and
        ``usage`` are the stack's (its shared tier's); ``purge`` and ``wait`` go to it.
    :param bus: a :mod:`chorde.mq` bus (``BrokerBus``, ``PeerBus``, ``LocalBus``), usually
        one per process shared by its coherent clients. The client does not close it.
    :param channel: processes whose clients share a stack use the same channel; clients of
        different stacks on one bus use different ones.
    :param timeout: how long a caller waits for another process's computation of a key
        before one more computation of it starts (one per ``timeout`` of waiting, in the
        whole cluster). Longer than the slowest computation.
    :param lease: a computation claim not renewed for this long is taken over: the time it
        takes to notice that the process computing a key died. Its holder renews it every
        ``lease / 3`` seconds.
    :param poll_interval: longest pause between two looks at the shared tier while
        waiting for another process's computation (a safety net: the bus wakes waiters).
    """

    def __init__(
        self,
        client: BaseCacheClient,
        bus: Bus,
        *,
        channel: str = "chorde",
        timeout: float = 30.0,
        lease: float = 2.0,
        poll_interval: float = 0.1,
    ) -> None:
        super().__init__(client)
        for attr in ("publish", "subscribe", "add_listener", "synced", "peer_id"):
            if not hasattr(bus, attr):
                raise ConfigurationError(f"bus must be a chorde.mq bus, {bus!r} lacks {attr!r}")
        if not isinstance(channel, str) or not channel:
            raise ConfigurationError(f"channel must be a non-empty str, got {channel!r}")
        self.timeout = check_ttl(timeout, "timeout")
        if not 0 < self.timeout < math.inf:
            raise ConfigurationError(f"timeout must be > 0 and finite, got {timeout!r}")
        self.lease = check_ttl(lease, "lease")
        if not 0 < self.lease < math.inf:
            raise ConfigurationError(f"lease must be > 0 and finite, got {lease!r}")
        self.poll_interval = check_ttl(poll_interval, "poll_interval")
        if not self.poll_interval > 0:
            raise ConfigurationError(f"poll_interval must be > 0, got {poll_interval!r}")

        if isinstance(client, TieredInclusiveClient) and len(client.clients) > 1:
            private, shared = client.clients[:-1], client.clients[-1]
        else:
            private, shared = (), client
        self.bus = bus
        self.channel = channel
        self._private: tuple[BaseCacheClient, ...] = tuple(private)
        self._shared = shared
        self._peer_hex = bus.peer_id.hex()
        self._claims = _Claims(shared, self.lease, channel)
        self._hits = self._misses = self._sets = self._errors = 0
        self._log = RateLimitedLog(logger, interval=30.0)

        # Invalidations received: a counter, and the counter value per recent key.
        self._inv_lock = threading.Lock()
        self._inv_seq = 0
        self._inv_floor = 0
        self._recent: dict[Hashable, int] = {}

        self._waiters: dict[Hashable, list[Callable[[], None]]] = {}
        self._waiters_lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}
        self._flights_lock = threading.Lock()

        self._usable = False
        self._l1: BaseCacheClient | None = None
        self._sub = bus.subscribe(channel, self._on_message, on_gap=self._on_gap)
        bus.add_listener(self._on_event)
        self._set_usable(bool(bus.synced))

    # ---- bus side ----------------------------------------------------------------------

    def _set_usable(self, usable: bool) -> None:
        self._usable = usable
        self._l1 = self._private[0] if usable and self._private else None

    def _on_event(self, event: str, peer: bytes | None) -> None:
        if event == "unsynced":
            if self._usable:
                self._set_usable(False)
                logger.info(
                    "coherence channel %r: the bus may be losing messages; serving from the "
                    "shared tier only until it is synced again",
                    self.channel,
                )
        elif event == "synced" and not self._usable:
            # Invalidations may have been missed meanwhile: private copies are suspect.
            self._drop_private()
            self._set_usable(True)
            logger.info("coherence channel %r: bus synced, private tiers back in use", self.channel)

    def _on_gap(self, channel: str) -> None:
        """An invalidation on our channel may have been lost: drop every private copy."""
        self._drop_private()

    def _on_message(self, msg: Message) -> None:
        if msg.type is MessageType.CLEAR:
            self._drop_private()
            return
        keys = []
        for item in msg.items:
            try:
                keys.append(decode_key(item))
            except ValueError as exc:
                self._errors += 1
                self._log.warning("coherence channel %r: undecodable key: %s", self.channel, exc)
        if msg.type is MessageType.INVALIDATE:
            with self._inv_lock:
                recent = self._recent
                for key in keys:
                    self._inv_seq += 1
                    recent.pop(key, None)
                    recent[key] = self._inv_seq
                while len(recent) > _RECENT:
                    oldest = next(iter(recent))
                    self._inv_floor = max(self._inv_floor, recent.pop(oldest))
            for tier in self._private:
                for key in keys:
                    tier.delete(key)
        for key in keys:
            self._wake(key)

    def _drop_private(self) -> None:
        """Forget every private copy, and every promotion in flight (a clear, or a gap)."""
        with self._inv_lock:
            self._inv_seq += 1
            self._inv_floor = self._inv_seq
            self._recent.clear()
        for tier in self._private:
            try:
                tier.clear()
            except Exception:
                logger.exception(
                    "coherence channel %r: clearing a private tier failed", self.channel
                )
        self._wake_all()  # a lost message may have been a wake-up

    def _invalidated_since(self, key: Hashable, before: int) -> bool:
        if self._inv_seq == before:
            return False
        seq = self._recent.get(key)
        if seq is not None:
            return seq > before
        return self._inv_floor > before

    def _announce(self, mtype: MessageType, ekeys: list[bytes]) -> None:
        """Publish on our channel (a lost message is noticed by its receivers as a gap)."""
        try:
            self.bus.publish(mtype, self.channel, ekeys, source=self._sub)
        except Exception as exc:
            self._errors += 1
            self._log.warning("coherence channel %r: publish failed: %s", self.channel, exc)

    def _wake(self, key: Hashable) -> None:
        for wake in self._waiters.get(key, ()):
            wake()

    def _wake_all(self) -> None:
        for wakes in list(self._waiters.values()):
            for wake in wakes:
                wake()

    def _add_waiter(self, key: Hashable, wake: Callable[[], None]) -> None:
        with self._waiters_lock:
            self._waiters[key] = [*self._waiters.get(key, ()), wake]

    def _remove_waiter(self, key: Hashable, wake: Callable[[], None]) -> None:
        with self._waiters_lock:
            rest = [w for w in self._waiters.get(key, ()) if w is not wake]
            if rest:
                self._waiters[key] = rest
            else:
                self._waiters.pop(key, None)

    # ---- reads -------------------------------------------------------------------------

    def getTtl(self, key: Hashable, default: Any = NONE) -> tuple[Any, float]:
        """``(value, ttl_left)`` from L1, else the shared tier (promoted into L1)."""
        l1 = self._l1
        if l1 is not None:
            value, ttl = l1.getTtl(key, _MISS)
            if ttl > 0:
                self._hits += 1
                return value, ttl
        value, ttl = self._lookup(key)
        if value is _MISS:
            if default is NONE:
                raise CacheMissError(key)
            return default, -1.0
        return value, ttl

    def get(self, key: Hashable, default: Any = NONE) -> Any:
        """The live value from L1, else from the shared tier."""
        l1 = self._l1
        if l1 is not None:
            value = l1.get(key, _MISS)
            if value is not _MISS:
                self._hits += 1
                return value
        value, ttl = self._lookup(key)
        if ttl > 0:
            return value
        if default is NONE:
            raise CacheMissError(key)
        return default

    def _tiers(self) -> tuple[BaseCacheClient, ...]:
        """The tiers to read: the private ones only while the bus is usable."""
        return (*self._private, self._shared) if self._usable else (self._shared,)

    def _promoter(self, before: int) -> Callable[[int, list[tuple[Hashable, Any, float]]], None]:
        """Promote hits of tier ``i`` into the private tiers above it, race-checked."""

        def promote(i: int, hits: list[tuple[Hashable, Any, float]]) -> None:
            for key, value, ttl in hits:
                self._promote(self._private[:i], key, value, ttl, before)

        return promote

    def _lookup(self, key: Hashable) -> tuple[Any, float]:
        """Every tier in order (private ones only while usable); promote a live hit."""
        before = self._inv_seq
        usable = self._usable
        stale: tuple[Any, float] = (_MISS, -1.0)
        private = self._private if usable else ()
        for i, tier in enumerate((*private, self._shared)):
            value, ttl = tier.getTtl(key, _MISS)
            if value is _MISS:
                continue
            if ttl > 0:
                self._hits += 1
                if usable:
                    self._promote(private[:i], key, value, ttl, before)
                return value, ttl
            if stale[0] is _MISS or ttl > stale[1]:
                stale = (value, ttl)
        self._misses += 1
        return stale

    def _promote(
        self, tiers: Iterable[BaseCacheClient], key: Hashable, value: Any, ttl: float, before: int
    ) -> None:
        tiers = tuple(tiers)
        for tier in tiers:
            tier.put(key, value, ttl)
        if self._invalidated_since(key, before) or not self._usable:
            # An invalidation overtook this read: the value may be the old one.
            for tier in tiers:
                tier.delete(key)

    def getTtlMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> Iterator[tuple[Hashable, tuple[Any, float]]]:
        """Batch :meth:`getTtl`: each tier is asked only for the keys the ones above missed."""
        keys = list(keys)
        before = self._inv_seq
        answer, hits = _fall_through_multi(self._tiers(), keys, default, self._promoter(before))
        self._hits += hits
        self._misses += len(answer) - hits
        yield from answer

    # ---- writes ------------------------------------------------------------------------

    def _write_private(self, key: Hashable, value: Any, ttl: float, before: int) -> None:
        if self._usable:
            self._promote(self._private, key, value, ttl, before)
        else:
            for tier in self._private:
                tier.delete(key)

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Write the shared tier, then L1, then tell the other processes to drop ``key``.

        A value the shared tier could not store (its server down) is not kept in L1
        either: this process would serve what no other process can see.
        """
        self.putMulti([(key, value)], ttl)

    def putMulti(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> list[Hashable]:
        """Batch :meth:`put`: one batch per tier, one announcement; return the keys the
        shared tier could not store."""
        ttl = check_ttl(ttl)
        items = list(items.items() if isinstance(items, dict) else items)
        ekeys = [encode_key(k) for k, _ in items]
        before = self._inv_seq
        failed = self._shared.putMulti(items, ttl) or []
        lost = set(failed)
        for key, value in items:
            if key in lost:  # not in the shared tier: no copy here either
                for tier in self._private:
                    tier.delete(key)
            else:
                self._write_private(key, value, ttl, before)
        self._sets += len(items) - len(lost)
        if ekeys:
            self._announce(MessageType.INVALIDATE, ekeys)
        return list(failed)

    def add(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Add in the shared tier (atomic there); on success copy to L1 and announce."""
        ttl = check_ttl(ttl)
        ekey = encode_key(key)
        before = self._inv_seq
        if not self._shared.add(key, value, ttl):
            return False
        self._write_private(key, value, ttl, before)
        self._sets += 1
        self._announce(MessageType.INVALIDATE, [ekey])
        return True

    def delete(self, key: Hashable) -> None:
        """Delete everywhere: shared tier, L1, and every other process's L1."""
        ekey = encode_key(key)
        self._shared.delete(key)
        for tier in self._private:
            tier.delete(key)
        self._announce(MessageType.INVALIDATE, [ekey])

    def expire(self, key: Hashable) -> None:
        """Mark stale in the shared tier and L1; other processes drop their copies."""
        ekey = encode_key(key)
        self._shared.expire(key)
        for tier in self._private:
            if self._usable:
                tier.expire(key)
            else:
                tier.delete(key)
        self._announce(MessageType.INVALIDATE, [ekey])

    def renew(self, key: Hashable, ttl: float) -> bool:
        """Renew in every tier of this process (other copies keep a shorter, safe ttl)."""
        ttl = check_ttl(ttl)
        return any([tier.renew(key, ttl) for tier in (self._shared, *self._private)])

    def clear(self) -> None:
        """Clear the shared tier and L1; every other process drops its private copies."""
        self._shared.clear()
        self._drop_private()
        self._announce(MessageType.CLEAR, [])

    # ---- leases (chorde.leases): the shared tier's, when it hands them out -----------------
    #
    # Then @cached computes once per cluster with them (no claims, no bus needed for it),
    # and the bus does what only it can: drop the other processes' L1 copies.

    @property
    def lease_ttl(self) -> float:
        """The shared tier's lease ttl; 0 when it hands out no leases."""
        shared = self._shared
        return float(shared.lease_ttl) if offered(shared) else 0.0  # type: ignore[attr-defined]

    def lease_read(self, key: Hashable, accept: Callable[[Any, float], bool]) -> LeaseRead:
        """The shared tier's lease read; a hit is copied into L1."""
        before = self._inv_seq
        read: LeaseRead = self._shared.lease_read(key, accept)  # type: ignore[attr-defined]
        if read.state == HIT and read.ttl > 0 and self._usable:
            self._promote(self._private, key, read.value, read.ttl, before)
        return read

    async def alease_read(self, key: Hashable, accept: Callable[[Any, float], bool]) -> LeaseRead:
        """Awaitable :meth:`lease_read`."""
        before = self._inv_seq
        read: LeaseRead = await self._shared.alease_read(key, accept)  # type: ignore[attr-defined]
        if read.state == HIT and read.ttl > 0 and self._usable:
            self._promote(self._private, key, read.value, read.ttl, before)
        return read

    def _leased_put(self, key: Hashable, value: Any, ttl: float, before: int) -> None:
        self._write_private(key, value, ttl, before)
        self._sets += 1
        self._announce(MessageType.INVALIDATE, [encode_key(key)])

    def lease_put(self, key: Hashable, value: Any, ttl: float, token: Any) -> None:
        """Store a leased computation's value in the shared tier (ending the lease), then L1,
        then tell the other processes to drop ``key``."""
        ttl = check_ttl(ttl)
        before = self._inv_seq
        self._shared.lease_put(key, value, ttl, token)  # type: ignore[attr-defined]
        self._leased_put(key, value, ttl, before)

    async def alease_put(self, key: Hashable, value: Any, ttl: float, token: Any) -> None:
        """Awaitable :meth:`lease_put`."""
        ttl = check_ttl(ttl)
        before = self._inv_seq
        await self._shared.alease_put(key, value, ttl, token)  # type: ignore[attr-defined]
        self._leased_put(key, value, ttl, before)

    def lease_release(self, key: Hashable, token: Any) -> None:
        """Give a lease of the shared tier back."""
        self._shared.lease_release(key, token)  # type: ignore[attr-defined]

    async def alease_release(self, key: Hashable, token: Any) -> None:
        """Awaitable :meth:`lease_release`."""
        await self._shared.alease_release(key, token)  # type: ignore[attr-defined]

    # ---- compute once per cluster ---------------------------------------------------------

    def compute_once(
        self,
        key: Hashable,
        compute: Callable[[], Any],
        ttl: float,
        recheck: float | None = 0.0,
    ) -> Any:
        """Return the value of ``key``, computed at most once across the cluster.

        A value in the shared tier with more than ``recheck`` seconds left is returned as
        it is (``None``: always compute, unless another process is computing it now).
        Otherwise one caller in the cluster runs ``compute()`` and stores the result for
        ``ttl`` seconds; the others wait for it (see the module docstring for the bounds).
        ``compute``'s exception reaches its caller and this process's waiters.
        """
        ttl = check_ttl(ttl)
        ekey = encode_key(key)
        me = threading.get_ident()
        flight, owner = self._claim_flight(key, me)
        if not owner:
            if flight.owner == me:
                raise RuntimeError(f"compute_once({key!r}) called again by its own computation")
            return flight.future.result()
        try:
            value = self._run_sync(key, ekey, compute, ttl, recheck)
        except BaseException as exc:
            flight.future.set_exception(exc)
            raise
        finally:
            self._release_flight(key, flight)
        flight.future.set_result(value)
        return value

    async def acompute_once(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[Any]],
        ttl: float,
        recheck: float | None = 0.0,
    ) -> Any:
        """Awaitable :meth:`compute_once`: ``compute()`` returns an awaitable."""
        ttl = check_ttl(ttl)
        ekey = encode_key(key)
        me = asyncio.current_task()
        flight, owner = self._claim_flight(key, me)
        if not owner:
            if flight.owner is me:
                raise RuntimeError(f"acompute_once({key!r}) awaited by its own computation")
            return await asyncio.wrap_future(flight.future)
        try:
            value = await self._run_async(key, ekey, compute, ttl, recheck)
        except BaseException as exc:
            flight.future.set_exception(exc)
            raise
        finally:
            self._release_flight(key, flight)
        flight.future.set_result(value)
        return value

    def _claim_flight(self, key: Hashable, owner: object) -> tuple[_Flight, bool]:
        with self._flights_lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight(owner)
            return flight, True

    def _release_flight(self, key: Hashable, flight: _Flight) -> None:
        with self._flights_lock:
            if self._flights.get(key) is flight:
                del self._flights[key]

    def _run_sync(
        self,
        key: Hashable,
        ekey: bytes,
        compute: Callable[[], Any],
        ttl: float,
        recheck: float | None,
    ) -> Any:
        event = threading.Event()
        wake = event.set
        self._add_waiter(key, wake)
        try:
            gen = self._protocol(key, ekey, ttl, recheck)
            action = _step(gen)
            while True:
                if action[0] == "done":
                    return action[1]
                if action[0] == "wait":
                    event.wait(action[1])
                    event.clear()
                    action = _step(gen)
                    continue
                try:
                    value = compute()
                except BaseException as exc:
                    action = _step(gen, throw=exc)
                else:
                    action = _step(gen, value)
        finally:
            self._remove_waiter(key, wake)

    async def _run_async(
        self,
        key: Hashable,
        ekey: bytes,
        compute: Callable[[], Awaitable[Any]],
        ttl: float,
        recheck: float | None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

        async def step(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
            if not self.blocking:
                return _step(*args, **kwargs)
            return await loop.run_in_executor(None, lambda: _step(*args, **kwargs))

        self._add_waiter(key, wake)
        try:
            gen = self._protocol(key, ekey, ttl, recheck)
            action = await step(gen)
            while True:
                if action[0] == "done":
                    return action[1]
                if action[0] == "wait":
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), action[1])
                    event.clear()
                    action = await step(gen)
                    continue
                try:
                    value = await compute()
                except BaseException as exc:
                    action = await step(gen, throw=exc)
                else:
                    action = await step(gen, value)
        finally:
            self._remove_waiter(key, wake)

    def _lock_key(self, key: Hashable, epoch: int) -> tuple[Any, ...]:
        return (_LOCK_TAG, self.channel, epoch, key)

    def _fresh(self, key: Hashable, accept: float) -> tuple[bool, Any]:
        """``(True, value)`` when the shared tier has ``key`` with more than ``accept`` left."""
        before = self._inv_seq
        value, left = self._shared.getTtl(key, _MISS)
        if value is _MISS or not left > accept:
            return False, None
        if self._usable:
            self._promote(self._private, key, value, left, before)
        return True, value

    def _protocol(
        self, key: Hashable, ekey: bytes, ttl: float, recheck: float | None
    ) -> Generator[tuple[Any, ...], Any, Any]:
        """The claim/wait/take-over loop, driven by :meth:`_run_sync` / :meth:`_run_async`.

        Yields ``("wait", seconds)`` (wait for a wake-up or that long) or ``("compute",)``
        (send back the computed value, or throw its exception in); returns the value.
        """
        accept = recheck
        epoch = 0
        vanished = 0
        delay = min(0.002, self.poll_interval)
        patience = time.monotonic() + self.timeout
        claims = self._claims
        while True:
            if accept is not None:
                hit, value = self._fresh(key, accept)
                if hit:
                    return value
            lock = self._lock_key(key, epoch)
            claim = (self._peer_hex, os.urandom(8).hex())
            if claims.claim(lock, claim):
                try:
                    # The previous holder may have stored the value just before releasing.
                    hit, value = (False, None) if accept is None else self._fresh(key, accept)
                    if not hit:
                        value = yield ("compute",)
                        # A computation that overlapped ours (its holder's lease ran out,
                        # or a waiter lost patience) may have stored first: its value wins.
                        stored, other = (
                            (False, None) if accept is None else self._fresh(key, accept)
                        )
                        if stored:
                            value = other
                        else:
                            self.put(key, value, ttl)
                except BaseException:
                    claims.release(lock, claim)
                    self._announce(MessageType.WAKE, [ekey])
                    raise
                claims.release(lock, claim)
                return value
            holder = self._shared.get(lock, None)
            now = time.monotonic()
            vanished = vanished + 1 if holder is None else 0
            if vanished > _MAX_VANISHED or (now >= patience and epoch >= _MAX_EPOCHS):
                self._log.warning(
                    "coherence channel %r: cannot coordinate the computation of a key (%s); "
                    "computing it here",
                    self.channel,
                    "shared tier not answering" if vanished else "waited too long",
                )
                value = yield ("compute",)
                self.put(key, value, ttl)
                return value
            if now >= patience:
                # The holder is alive (it renews its claim) but slow: one more computation,
                # through the next lock, so only one impatient waiter in the cluster starts it.
                logger.info(
                    "coherence channel %r: waited %.1f s for another process's computation of "
                    "%r, starting one more",
                    self.channel,
                    self.timeout,
                    key,
                )
                epoch += 1
                patience = now + self.timeout
                continue
            if accept is None:
                accept = 0.0  # after waiting for another computation, its result will do
            yield ("wait", delay)
            delay = min(delay * 2, self.poll_interval)

    # ---- the rest of the contract ---------------------------------------------------------

    def close(self) -> None:
        """Release this process's computation claims, leave the bus channel and close the
        stack (the bus itself stays open)."""
        self._claims.close()
        self.bus.unsubscribe(self._sub)
        remove = getattr(self.bus, "remove_listener", None)
        if remove is not None:
            remove(self._on_event)
        super().close()

    @property
    def stats(self) -> CacheStats:
        """Hits, misses and sets through this client; evictions and errors of every tier."""
        total = sum((t.stats for t in (*self._private, self._shared)), CacheStats())
        return CacheStats(
            self._hits, self._misses, self._sets, total.evictions, total.errors + self._errors
        )

    def __repr__(self) -> str:
        return (
            f"<CoherentWrapperClient channel={self.channel!r} bus={self.bus!r} "
            f"usable={self._usable}>"
        )


if not TYPE_CHECKING:  # (type checkers keep flagging unknown names)

    def __getattr__(name: str) -> Any:
        # chorde 1.x's names here: what replaced them (see chorde._legacy).
        from chorde import _legacy

        return _legacy.attribute(__name__, name)
