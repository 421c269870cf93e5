"""A memcached client: consistent hashing, any key, any value size, signed values.

Usage::

    from chorde.clients.memcached import MemcachedClient

    c = MemcachedClient(["localhost:11211"], checksum_key="a secret shared by your app")
    c.put(3, 10, 300)
    assert c.get(3) == 10

How entries are stored
    * Keys go through :func:`chorde.keys.memcache_key`: short printable keys are used as they
      are (after ``namespace``), anything else becomes a digest. The full encoded key is
      signed into the value and compared on read, so a digest collision is a miss.
    * Values are pickled, optionally compressed and HMAC-signed by
      :class:`chorde.serialization.Serializer`; they are verified before unpickling, so
      whoever can write to the memcached cannot make this process run code. A payload that
      fails verification is a miss, counted in ``stats.errors``.
    * Every entry carries its own absolute expiry (wall clock), so :meth:`getTtl` returns a
      float ``ttl_left`` and :meth:`expire` can mark an entry stale while keeping it. The
      server-side expiry is set ``stale_grace`` seconds (default 60) beyond the logical one so
      stale entries stay readable by ``getTtl`` for that long (stale-while-revalidate).
      Processes must have roughly synchronised clocks.
    * Values larger than ``max_item_size`` are paged (see :mod:`chorde.clients._pages`).

Servers
    Keys are spread over the servers by a consistent-hash ring (:mod:`chorde.hashring`):
    adding or removing one of N servers remaps about 1/N of the keys. A server given by DNS
    name is resolved with dnspython and re-resolved on the record TTL (bounded by
    ``dns_min_interval``/``dns_max_interval``); it may yield several A/AAAA records, or SRV
    records when the name starts with ``_`` (``_memcache._tcp.example.com``). The ring is
    swapped atomically, so in-flight calls finish against the servers they started with.
    Each thread talks to each server over its own socket, so the client is thread-safe
    without a lock on the hot path.

Asyncio
    The awaitable methods (``aget``, ``agetTtl``, ``agetMulti``, ``aput``, ``aadd``,
    ``adelete``, ``arenew``, ``aexpire``, ``aupdate``, ``aclear``, ``apurge``...) are native:
    each event loop gets a pool of up to ``pool_size`` connections per server, used through
    the loop's non-blocking socket calls, so no call ever blocks the loop or goes through an
    executor (``aclose``, which may wait for the refresher thread, still does), and no call
    waits behind another's reply. They run the very same operations as the blocking methods
    (same keys, payloads, paging, generations and fault handling); a loop's connections are
    closed when the loop goes away.

Faults (see docs/operations.md, "memcached under faults")
    Every call waits for its servers ``timeout`` seconds at the most, in all (1 s by
    default; ``connect_timeout``, 0.5 s, bounds one connect within it), whatever other calls
    do; requests to several servers go out at the same time. A server that times out, or
    fails again on a new connection (``connect_retries``: a lost connect or a socket from
    before a restart is retried first), is marked down: its keys are misses and writes to
    it are remembered (``write_log_size`` keys) rather than sent, counted in
    ``stats.errors`` and logged at most once a minute. A thread probes it every
    ``retry_interval`` (0.5 s); once it answers, the writes it missed are undone there (the
    keys deleted, or the namespace's generation renewed) before it is used again, so a
    failed write never lets an older value be read by this client. Keys of a down server
    are *not* moved to other servers, which would serve stale data once it came back.

``clear()``
    ``flush_all`` would wipe every application sharing the servers, so ``clear()`` instead
    writes a new random *generation* to each server under a ``namespace``-scoped key. Every
    entry carries the generation it was written in and is signed for it, and every read
    fetches the server's generation record in the same round trip, so a clear is seen at
    once by every client of the namespace, on every host, and an entry from before it never
    verifies again. The record is signed too (named after the last ``checksum_key``), and
    one that does not verify, or is older than one seen, is replaced. Entries of old
    generations age out or are evicted by memcached. Writes made by another client that had
    not yet seen the new generation are lost (read as misses), which a cache can afford.

Atomicity
    :meth:`add` maps to memcached ``add`` (falling back to ``gets``/``cas`` when the key holds
    only a stale entry); :meth:`renew` and :meth:`expire` are ``gets``/``cas`` loops, so they
    never overwrite a concurrent ``put`` (they retry, a bounded number of times), and so is
    :meth:`update` (``aupdate``), a read-modify-write that loses no concurrent update.

Layers (each module one job; nothing but the standard library underneath)
    * :mod:`~chorde.clients.memcached.protocol`: the text protocol without I/O: requests
      encoded, replies parsed by one incremental parser, pages planned.
    * :mod:`~chorde.clients.memcached.blocking` and :mod:`~chorde.clients.memcached.aio`:
      the transports (sockets, timeouts) and the drivers that run an operation on them.
    * :mod:`~chorde.clients.memcached.servers`: the ring, discovery (static, DNS), liveness.
    * :mod:`~chorde.clients.memcached.client`: :class:`MemcachedClient`, whose operations are
      generators of the calls listed in :mod:`~chorde.clients.memcached.calls`, written once
      for both drivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chorde.clients.memcached.client import MemcachedClient
from chorde.clients.memcached.servers import DEFAULT_PORT, ServerSpec, parse_server
from chorde.clients.memcached.servers import logger as logger  # every module's, one name

__all__ = ["DEFAULT_PORT", "MemcachedClient", "ServerSpec", "parse_server"]


if not TYPE_CHECKING:  # (type checkers keep flagging unknown names)

    def __getattr__(name: str) -> Any:
        # chorde 1.x's names here: what replaced them (see chorde._legacy).
        from chorde import _legacy

        return _legacy.attribute(__name__, name)
