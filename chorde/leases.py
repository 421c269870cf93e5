"""Compute once per cluster without a broker: leases handed out by the shared cache itself.

When a popular entry expires, every process that reads it would recompute it at once. A
*lease* makes one caller in the whole cluster compute while the others wait for its value
(or are served the stale one), with nothing but the shared cache to coordinate them:

* memcached 1.6+ hands out *win tokens* (meta commands): the first reader of a missing
  entry gets the token and an empty placeholder is created with the lease's ttl; the first
  reader of a stale entry marks it stale on the server and gets the token; every later
  reader learns that a token is out. A new value replaces the item, which clears it. Servers
  without meta commands get the same with an ``add`` of a lease key next to the entry.
* Redis: ``SET <lease key> <token> NX PX <ttl>`` beside the entry, deleted with the new value.

Either way the server decides who wins (atomically) and when a lease lapses: a winner that
dies or hangs delays the others by at most the lease's ttl, after which the next reader wins.
No thread renews anything, and no message bus is involved.

A client offers leases by having ``lease_ttl > 0`` and these methods (each with an
awaitable ``a``-twin):

* ``lease_read(key, accept)`` reads ``key`` and, unless ``accept(value, ttl_left)`` likes
  what is held, tries to take its lease: a :class:`LeaseRead` says what happened;
* ``lease_put(key, value, ttl, token)``: the winner stores its value, which ends the lease;
* ``lease_release(key, token)``: the winner gives up (its computation failed or is not to be
  stored): the entry stays as it was and the next reader may win at once.

:func:`compute_once` (and :func:`acompute_once`) runs the whole dance for one key;
``@cached`` does the same on its misses when its client offers leases (see
:func:`offered`). The waiting loop is written once (:func:`wait_steps`) and driven by a
blocking and an asyncio driver.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Generator, Hashable
from typing import Any

from chorde.sentinel import NONE

__all__ = [
    "ALONE",
    "BUSY",
    "HELD",
    "HIT",
    "STALE",
    "UNAVAILABLE",
    "WON",
    "LeaseRead",
    "acompute_once",
    "aleased_call",
    "compute_once",
    "leased_call",
    "offered",
    "wait_steps",
]

logger = logging.getLogger("chorde.leases")

#: What a lease read found (:attr:`LeaseRead.state`), and how a leased call was answered:
#: the value held is acceptable (no lease taken).
HIT = "hit"
#: This caller holds the lease: it computes, then ``lease_put`` (or ``lease_release``).
WON = "won"
#: Another caller holds the lease; the value held (stale, or none) comes with it.
BUSY = "busy"
#: No lease can be had now (the server is down or failing): compute without one.
UNAVAILABLE = "unavailable"
#: Outcomes of a leased call besides HIT and WON: served the stale value held while another
#: caller computes; computed without a lease (unavailable, or waited too long).
STALE = "stale"
ALONE = "alone"
#: The outcomes whose value is the one held, as stored (not a computed result).
HELD = frozenset((HIT, STALE))

#: Reads before a waiter gives up: ``patience`` lease ttls (each lapse hands the lease on).
_PATIENCE_LEASES = 3
#: First pause between two reads of a waiter, the growth factor and the longest pause.
_FIRST_PAUSE = 0.002
_PAUSE_GROWTH = 1.5
_MAX_PAUSE = 0.025


class LeaseRead:
    """What a lease read found: ``state`` (:data:`HIT`, :data:`WON`, :data:`BUSY` or
    :data:`UNAVAILABLE`), the value held and its ttl left (``NONE`` and -1.0 when there is
    none; a stale one has ``ttl <= 0``), and the ``token`` a winner passes back."""

    __slots__ = ("state", "token", "ttl", "value")

    def __init__(self, state: str, value: Any = NONE, ttl: float = -1.0, token: Any = None):
        self.state = state
        self.value = value
        self.ttl = ttl
        self.token = token

    def __repr__(self) -> str:
        held = "nothing" if self.value is NONE else f"ttl {self.ttl:.3g}"
        return f"<LeaseRead {self.state}, {held}>"


def offered(client: Any) -> bool:
    """Whether ``client`` hands out leases (a memcached or Redis client, or a stack whose
    shared tier is one, with ``lease_ttl > 0``)."""
    return (
        callable(getattr(type(client), "lease_read", None))
        and (getattr(client, "lease_ttl", 0) or 0) > 0
    )


def live(value: Any, ttl: float) -> bool:
    """The default ``accept``: any live value."""
    return ttl > 0


def _never(value: Any, ttl: float) -> bool:
    return False


#: A step of :func:`wait_steps`: ``(READ, accept)`` (the driver returns ``lease_read``'s
#: :class:`LeaseRead`) or ``(SLEEP, seconds)``.
READ = "read"
SLEEP = "sleep"


def wait_steps(
    accept: Callable[[Any, float], bool],
    *,
    lease_ttl: float,
    serve_stale: Callable[[Any], bool] | None = None,
    force: bool = False,
) -> Generator[tuple[str, Any], Any, tuple[str, LeaseRead]]:
    """The waiting loop of a leased call, as steps a driver runs.

    Returns ``(outcome, last read)``: :data:`HIT` (an acceptable value turned up),
    :data:`WON` (compute, then store with the read's token), :data:`STALE` (another caller
    computes and ``serve_stale(value)`` allows the value held), or :data:`ALONE` (compute
    without a lease: none could be had, or no value came within ``3 * lease_ttl`` seconds).
    ``force``: take the lease whatever is held (a forced refresh); once another caller's
    computation was waited for, its result will do.
    """
    read: LeaseRead = yield (READ, _never if force else accept)
    patience = time.monotonic() + _PATIENCE_LEASES * lease_ttl
    pause = _FIRST_PAUSE
    longest = min(_MAX_PAUSE, lease_ttl / 10)
    while True:
        state = read.state
        if state in (HIT, WON):
            return state, read
        if state != BUSY:
            return ALONE, read
        if serve_stale is not None and read.value is not NONE and serve_stale(read.value):
            return STALE, read
        if time.monotonic() >= patience:
            logger.warning(
                "chorde: waited %.3g s for another process's computation of a key (%s "
                "lease ttls, each handing the lease on when it lapses); computing it here",
                _PATIENCE_LEASES * lease_ttl,
                _PATIENCE_LEASES,
            )
            return ALONE, read
        yield (SLEEP, pause * (0.5 + random.random()))
        pause = min(pause * _PAUSE_GROWTH, longest)
        read = yield (READ, accept)


def _drive(client: Any, key: Hashable, steps: Generator[tuple[str, Any], Any, Any]) -> Any:
    """Run :func:`wait_steps` with blocking calls."""
    sent: Any = None
    while True:
        try:
            kind, arg = steps.send(sent)
        except StopIteration as stop:
            return stop.value
        if kind == READ:
            sent = client.lease_read(key, arg)
        else:
            time.sleep(arg)
            sent = None


async def _adrive(client: Any, key: Hashable, steps: Generator[tuple[str, Any], Any, Any]) -> Any:
    """Run :func:`wait_steps` with awaitable calls."""
    sent: Any = None
    while True:
        try:
            kind, arg = steps.send(sent)
        except StopIteration as stop:
            return stop.value
        if kind == READ:
            sent = await client.alease_read(key, arg)
        else:
            await asyncio.sleep(arg)
            sent = None


#: ``compute()`` of a leased call: ``(result, what to store, ttl)``; a ttl <= 0: not stored.
Computed = tuple[Any, Any, float]


def _stored(client: Any, key: Hashable, outcome: str, read: LeaseRead, computed: Computed) -> None:
    """Store what the winner (or a caller alone) computed, or give the lease back."""
    _, value, ttl = computed
    try:
        if outcome == WON:
            if ttl > 0:
                client.lease_put(key, value, ttl, read.token)
            else:
                client.lease_release(key, read.token)
        elif ttl > 0:
            client.put(key, value, ttl)
    except TypeError:
        raise
    except Exception:
        logger.exception("chorde: storing a computed value failed")


async def _astored(
    client: Any, key: Hashable, outcome: str, read: LeaseRead, computed: Computed
) -> None:
    """Awaitable :func:`_stored`."""
    _, value, ttl = computed
    try:
        if outcome == WON:
            if ttl > 0:
                await client.alease_put(key, value, ttl, read.token)
            else:
                await client.alease_release(key, read.token)
        elif ttl > 0:
            await client.aput(key, value, ttl)
    except TypeError:
        raise
    except Exception:
        logger.exception("chorde: storing a computed value failed")


def _release_quietly(client: Any, key: Hashable, read: LeaseRead) -> None:
    try:
        client.lease_release(key, read.token)
    except Exception:
        logger.exception("chorde: releasing a lease failed (it lapses by itself)")


def leased_call(
    client: Any,
    key: Hashable,
    compute: Callable[[], Computed],
    accept: Callable[[Any, float], bool] = live,
    *,
    serve_stale: Callable[[Any], bool] | None = None,
    force: bool = False,
) -> tuple[str, Any]:
    """Compute ``key`` once per cluster: ``(outcome, value)``.

    For :data:`HIT` and :data:`STALE` the value is the one held, as stored; for :data:`WON`
    and :data:`ALONE` it is ``compute()``'s result, whose stored form and ttl it also
    returns (see :data:`Computed`), stored with the lease's token. ``compute``'s exception
    releases the lease (the next reader may win at once) and propagates.
    """
    outcome, read = _drive(
        client,
        key,
        wait_steps(accept, lease_ttl=client.lease_ttl, serve_stale=serve_stale, force=force),
    )
    if outcome in (HIT, STALE):
        return outcome, read.value
    try:
        computed = compute()
    except BaseException:
        if outcome == WON:
            _release_quietly(client, key, read)
        raise
    _stored(client, key, outcome, read, computed)
    return outcome, computed[0]


async def aleased_call(
    client: Any,
    key: Hashable,
    compute: Callable[[], Awaitable[Computed]],
    accept: Callable[[Any, float], bool] = live,
    *,
    serve_stale: Callable[[Any], bool] | None = None,
    force: bool = False,
) -> tuple[str, Any]:
    """Awaitable :func:`leased_call`: ``compute()`` returns an awaitable."""
    outcome, read = await _adrive(
        client,
        key,
        wait_steps(accept, lease_ttl=client.lease_ttl, serve_stale=serve_stale, force=force),
    )
    if outcome in (HIT, STALE):
        return outcome, read.value
    try:
        computed = await compute()
    except BaseException:
        if outcome == WON:
            try:
                await client.alease_release(key, read.token)
            except Exception:
                logger.exception("chorde: releasing a lease failed (it lapses by itself)")
        raise
    await _astored(client, key, outcome, read, computed)
    return outcome, computed[0]


def compute_once(
    client: Any,
    key: Hashable,
    compute: Callable[[], Any],
    ttl: float,
    *,
    serve_stale: bool = False,
) -> Any:
    """The live value of ``key`` in ``client``, computed by at most one caller in the cluster
    at a time and stored for ``ttl`` seconds.

    ``client`` must offer leases (:func:`offered`). Callers that find another one computing
    wait for its value; with ``serve_stale`` they get the stale value held, if any, at once.
    """
    if not offered(client):
        raise TypeError(f"{client!r} hands out no leases (lease_ttl > 0 and lease_read)")

    def computed() -> Computed:
        value = compute()
        return value, value, ttl

    stale = (lambda value: True) if serve_stale else None
    return leased_call(client, key, computed, serve_stale=stale)[1]


async def acompute_once(
    client: Any,
    key: Hashable,
    compute: Callable[[], Awaitable[Any]],
    ttl: float,
    *,
    serve_stale: bool = False,
) -> Any:
    """Awaitable :func:`compute_once`: ``compute()`` returns an awaitable."""
    if not offered(client):
        raise TypeError(f"{client!r} hands out no leases (lease_ttl > 0 and lease_read)")

    async def computed() -> Computed:
        value = await compute()
        return value, value, ttl

    stale = (lambda value: True) if serve_stale else None
    return (await aleased_call(client, key, computed, serve_stale=stale))[1]
