"""The client registry of the contract suite.

To run a new client through the whole contract, add a factory to ``FACTORIES``: a function
taking pytest's ``request`` (to reach fixtures such as ``memcached``) and a ``FakeClock``,
returning an ``Env``. Clients that accept a clock should use the fake one (expiry tests then
run instantly); others leave ``env.advance`` sleeping for real.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chorde.clients.base import BaseCacheClient
from chorde.clients.inproc import InprocCacheClient, LinkedLRU, OrderedLRU
from chorde.clients.namespace import NamespaceWrapper
from chorde.clients.tiered import TieredInclusiveClient


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Env:
    """A client under contract test, and how to let time pass for it."""

    client: BaseCacheClient
    advance: Callable[[float], None] = field(default=time.sleep)
    #: Keys must be encodable by chorde.keys (clients whose keys cross a process boundary).
    encoded_keys: bool = False
    #: Entries may be evicted at any time (e.g. approximate stores under pressure).
    lossy: bool = False
    #: ``client`` is the :class:`Awaiting` proxy (one event loop: no calls from threads).
    awaited: bool = False


def _inproc(store=None):
    def make(request, clock):
        return Env(InprocCacheClient(1000, store, clock=clock), clock.advance)

    return make


def _tiered_inproc(request, clock):
    client = TieredInclusiveClient(
        InprocCacheClient(10, clock=clock), InprocCacheClient(1000, clock=clock)
    )
    return Env(client, clock.advance)


def _namespaced(request, clock):
    return Env(NamespaceWrapper("ns", InprocCacheClient(1000, clock=clock)), clock.advance)


def _memcached(n):
    def make(request, clock):
        from chorde.clients.memcached import MemcachedClient

        servers = request.getfixturevalue("memcached_factory")(n)
        client = MemcachedClient([s.address for s in servers], checksum_key="contract")
        return Env(client, encoded_keys=True)

    return make


def _tiered_memcached(request, clock):
    from chorde.clients.memcached import MemcachedClient

    [server] = request.getfixturevalue("memcached_factory")(1)
    # Real time on both levels: memcached entries carry wall-clock expiry.
    client = TieredInclusiveClient(
        InprocCacheClient(10), MemcachedClient([server.address], checksum_key="contract")
    )
    return Env(client, encoded_keys=True)


def _asyncwrite_inproc(request, clock):
    from chorde.clients.asyncache import AsyncWriteCacheClient

    client = AsyncWriteCacheClient(
        InprocCacheClient(1000, clock=clock), writer_threads=2, clock=clock
    )
    return Env(client, clock.advance)


def _asyncwrite_memcached(request, clock):
    from chorde.clients.asyncache import AsyncWriteCacheClient
    from chorde.clients.memcached import MemcachedClient

    [server] = request.getfixturevalue("memcached_factory")(1)
    client = AsyncWriteCacheClient(MemcachedClient([server.address], checksum_key="contract"))
    return Env(client, encoded_keys=True)


def _files(request, clock):
    from chorde.clients.files import FilesCacheClient

    path = request.getfixturevalue("tmp_path") / "files-cache"
    client = FilesCacheClient(path, 64 * 1024 * 1024, checksum_key="contract", clock=clock)
    return Env(client, clock.advance, encoded_keys=True)


def _coherent_inproc(request, clock):
    from chorde.clients.coherent import CoherentWrapperClient
    from chorde.mq import LocalBus

    stack = TieredInclusiveClient(
        InprocCacheClient(10, clock=clock), InprocCacheClient(1000, clock=clock)
    )
    return Env(CoherentWrapperClient(stack, LocalBus()), clock.advance, encoded_keys=True)


def _coherent_memcached(request, clock):
    from chorde.clients.coherent import CoherentWrapperClient
    from chorde.clients.memcached import MemcachedClient
    from chorde.mq import LocalBus

    [server] = request.getfixturevalue("memcached_factory")(1)
    stack = TieredInclusiveClient(
        InprocCacheClient(10), MemcachedClient([server.address], checksum_key="contract")
    )
    return Env(CoherentWrapperClient(stack, LocalBus()), encoded_keys=True)


def _toy_by_url(request, clock):
    # A backend from outside chorde, registered by tests/toy, built by URL.
    import tests.toy  # noqa: F401  (registers the toy:// scheme)
    from chorde.clients import from_url

    name = f"contract-{next(_toy_names)}"
    return Env(from_url(f"toy://{name}?size=1000", clock=clock), clock.advance)


_toy_names = itertools.count()


def _redis(request, clock):
    from chorde.clients.redis import RedisClient
    from tests.redis_servers import start_redis

    server = start_redis(request)
    return Env(RedisClient(server.address, checksum_key="contract"), encoded_keys=True)


def _redis_cluster(request, clock):
    from chorde.clients.redis import RedisClient
    from tests.redis_servers import shared_cluster

    # One cluster for the session (it takes seconds to form); a namespace per test.
    nodes = [n.address for n in shared_cluster().nodes[:2]]
    name = f"contract-{next(_toy_names)}"
    client = RedisClient(cluster=nodes, checksum_key="contract", namespace=name)
    return Env(client, encoded_keys=True)


def _tiered_redis(request, clock):
    from chorde.clients import from_url
    from tests.redis_servers import start_redis

    server = start_redis(request)
    client = from_url(["inproc://?size=10", f"redis://{server.address}"], checksum_key="contract")
    return Env(client, encoded_keys=True)


FACTORIES: dict[str, Callable[..., Env]] = {
    "memcached-1": _memcached(1),
    "memcached-3": _memcached(3),
    "tiered-inproc-memcached": _tiered_memcached,
    # Both exact-LRU implementations, in each build (Cache is one of them).
    "inproc-lru": _inproc(OrderedLRU),
    "inproc-lru-linked": _inproc(LinkedLRU),
    "inproc-lru-notouch": _inproc("lru-notouch"),
    "inproc-cuckoo": _inproc("cuckoo"),
    "tiered-inproc": _tiered_inproc,
    "namespace-inproc": _namespaced,
    "asyncwrite-inproc": _asyncwrite_inproc,
    "asyncwrite-memcached": _asyncwrite_memcached,
    "files": _files,
    "coherent-inproc": _coherent_inproc,
    "coherent-memcached": _coherent_memcached,
    "toy-by-url": _toy_by_url,
    "redis": _redis,
    "redis-cluster": _redis_cluster,
    "tiered-inproc-redis-by-url": _tiered_redis,
}


class Awaiting:
    """A client's contract spoken through its awaitable methods.

    ``proxy.get(k)`` runs ``await client.aget(k)`` on an event loop of its own, so every
    contract test also checks the awaitable path, composition clients included (they
    must await their tiers' awaitables, not fall back to an executor).
    """

    def __init__(self, client: BaseCacheClient) -> None:
        self._client = client
        self._loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        awaitable = getattr(self._client, "a" + name, None)
        if not callable(attr) or awaitable is None:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = self._loop.run_until_complete(awaitable(*args, **kwargs))
            return iter(result) if name in ("getMulti", "getTtlMulti") else result

        return call

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._client.aclose())
        finally:
            self._loop.close()


@pytest.fixture(params=sorted(FACTORIES))
def _made(request):
    clock = FakeClock()
    return FACTORIES[request.param](request, clock)


@pytest.fixture(params=["direct", "awaited"])
def env(request, _made):
    """Each registered client, fresh for every test, closed afterwards; used directly and
    through its awaitable methods."""
    if request.param == "awaited":
        _made.client = Awaiting(_made.client)
        _made.awaited = True
    yield _made
    _made.client.close()
