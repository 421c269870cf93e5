"""A Redis (or Valkey) client: one server, a Sentinel-watched master, or a Cluster.

Usage::

    from chorde.clients.redis import RedisClient

    c = RedisClient("localhost:6379", checksum_key="a secret shared by your app")
    c.put(3, 10, 300)
    assert c.get(3) == 10

Install it with ``pip install 'chorde[redis]'`` (redis-py with hiredis). Valkey speaks the
same protocol: point the client at it, or pass a ``valkey.Valkey`` object as ``server``.

How entries are stored
    * Keys go through :func:`chorde.keys.encode_key` (after ``namespace`` and ``:``); an
      encoding over 256 bytes becomes a digest. The full encoded key is signed into the
      value and compared on read, so a digest collision is a miss.
    * Values are pickled, compressed above ``compress_threshold`` and HMAC-signed by
      :class:`chorde.serialization.Serializer`, and verified before unpickling: whoever can
      write to the Redis cannot make this process run code. A payload that fails
      verification (hostile, truncated, over ``max_value_size``) is a miss, counted in
      ``stats.errors``.
    * Every entry carries its own absolute expiry (wall clock) inside the signed value, so
      :meth:`~RedisClient.getTtl` returns a float ``ttl_left`` and
      :meth:`~RedisClient.expire` marks an entry stale while keeping it; the key's Redis TTL
      is ``stale_grace`` seconds (60) longer, so stale entries stay readable for
      stale-while-revalidate. Processes need roughly synchronised clocks.

``clear()``
    Never ``FLUSHDB``: the namespace has a *generation* in a record key (``<namespace>~gen``)
    that ``clear()`` replaces with a random one. Every value starts with the generation it
    was written in, and every read fetches the record in the same command (``MGET``), so a
    clear is seen at once by every client of the namespace. Old entries age out. In a
    Cluster, a command reaches one hash slot, so the record is kept once per slot (16,384
    small keys, written by ``clear()``), each under a hash tag of its slot.

Atomicity
    ``put`` is a plain ``SET`` of the value stamped with the generation this client read
    within the last ``generation_check`` seconds (1 s; every read refreshes it), else a Lua
    script that stamps the current one and returns it: a clear by another client in that
    second may lose a write (a miss later, never an older value). The other writes are Lua
    scripts (:mod:`~chorde.clients.redis.scripts`), each one command that no other client
    can interleave with: ``add`` stores only if no live entry of the current generation is
    there (one command); ``renew``/``expire``/``update``/``touch``/``incr`` read the entry,
    re-sign it (the expiry is signed, so only the client can write it) and compare-and-set
    it against the signature it read. Scripts rather than ``WATCH``/``MULTI``: one round
    trip for the write, no connection held between the read and the write, and the same in
    a Cluster, where a script runs on the node of its keys (a value and its slot's record
    share a slot).

Topologies
    One server (``"host:port"``, TLS, a unix socket, ACL ``username``/``password``, ``db``);
    Sentinel (``sentinels=[...]``, ``service_name``): the master the sentinels name, asked
    again after a failover; Cluster (``cluster=[...]``): keys spread over the slots, batches
    grouped by node (one round trip per node), the slot map refreshed when a node fails or
    answers ``MOVED``. redis-py does the talking (:mod:`~chorde.clients.redis.topology`);
    on one server with an unbounded pool (no ``max_connections``), each call reuses a
    connection of the client's pool kept from an earlier call, checked as the pool checks
    it, rather than ``execute_command`` (whose checkout and bookkeeping cost more than the
    rest of a get); redis-py's own metrics then do not count these commands.

Faults
    A call to a server that refuses, resets or times out (``connect_timeout``/``timeout``,
    0.5 s and 1 s) is a miss or a dropped write, counted in ``stats.errors`` and logged at
    most once a minute; the server is then left alone for ``retry_interval`` seconds (its
    calls return at once) before one caller probes it again. Keys whose writes failed are
    remembered and deleted before their next use, and a clear that did not reach every
    server is redone first, so a server coming back (restarted from its persistence, or a
    promoted replica) never serves a value older than the last one written
    (:mod:`~chorde.clients.redis.health`).

Asyncio
    The awaitable methods are native: each event loop gets redis-py asyncio clients of its
    own, closed when the loop shuts down. They run the very same operations as the blocking
    methods (:mod:`~chorde.clients.redis.drivers`).

Layers
    * :mod:`~chorde.clients.redis.calls`: what an operation asks a driver for;
    * :mod:`~chorde.clients.redis.drivers`: the blocking and asyncio drivers;
    * :mod:`~chorde.clients.redis.topology`: the redis-py clients, per topology and loop;
    * :mod:`~chorde.clients.redis.scripts`: the Lua scripts;
    * :mod:`~chorde.clients.redis.health`: down nodes and the write log;
    * :mod:`~chorde.clients.redis.client`: :class:`RedisClient`, operations written once;
    * :mod:`~chorde.clients.redis.schemes`: the ``redis://`` family of URLs.
"""

from __future__ import annotations

from chorde.clients.redis.client import RedisClient
from chorde.clients.redis.health import logger as logger

__all__ = ["RedisClient"]
