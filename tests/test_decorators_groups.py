"""@cached groups: tags and invalidate_all, on every client, across processes and under
coherence (a revision record per group, read with the entry; no key scans)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from chorde import CacheMissError
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde.tags import Stamped, ainvalidate_tags, function_key, invalidate_tags, tag_key
from tests.contract.conftest import FACTORIES, FakeClock

WAIT = 5


@pytest.fixture(params=sorted(FACTORIES))
def any_client(request):
    env = FACTORIES[request.param](request, FakeClock())
    yield env.client
    env.client.close()


def _settled(client, *keys):
    for key in keys:  # write-behind clients: their writes complete in the background
        client.wait(key)


def test_tags_and_invalidate_all_on_every_client(any_client):
    calls = []

    @cached(any_client, ttl=300, tags=lambda user, page=0: [f"user:{user}", "pages"])
    def page(user, page=0):
        calls.append(("page", user, page))
        return [user, page, len(calls)]

    @cached(any_client, ttl=300, tags=["pages"])
    def index():
        calls.append(("index",))
        return len(calls)

    @cached(any_client, ttl=300)
    def plain(x=None, scale=1):
        calls.append(("plain", x))
        return [x, scale, len(calls)]

    def fill():
        values = [page(1), page(2), page(1, page=3), index(), plain(1), plain(2, scale=2), plain()]
        _settled(
            any_client,
            page.cache_key(1),
            page.cache_key(2),
            page.cache_key(1, page=3),
            index.cache_key(),
            plain.cache_key(1),
            plain.cache_key(2, scale=2),
            plain.cache_key(),
        )
        return values

    first = fill()
    n = len(calls)
    assert fill() == first and len(calls) == n  # all hits

    invalidate_tags(any_client, "user:1")
    _settled(any_client, tag_key("user:1"))
    assert page(2) == first[1] and index() == first[3]  # other tags: still cached
    assert page(1) != first[0] and page(1, page=3) != first[2]  # recomputed
    assert len(calls) == n + 2

    invalidate_tags(any_client, "pages")
    _settled(any_client, tag_key("pages"))
    n = len(calls)
    page(2)
    index()
    assert len(calls) == n + 2

    n = len(calls)
    plain.invalidate_all()  # every call form: positional, keywords, none
    _settled(any_client, function_key(plain.namespace))
    plain(1)
    plain(2, scale=2)
    plain()
    assert len(calls) == n + 3
    page(2)  # another function: untouched
    assert len(calls) == n + 3


async def test_tags_and_invalidate_all_on_every_client_async(any_client):
    calls = []

    @cached(any_client, ttl=300, tags=lambda user: [f"user:{user}"])
    async def profile(user):
        calls.append(user)
        await asyncio.sleep(0)
        return [user, len(calls)]

    @cached(any_client, ttl=300)
    async def count(x):
        calls.append(x)
        return len(calls)

    a, b = await profile(1), await profile(2)
    c = await count("x")
    _settled(any_client, profile.cache_key(1), profile.cache_key(2), count.cache_key("x"))
    assert [await profile(1), await profile(2), await count("x")] == [a, b, c]
    assert len(calls) == 3
    await ainvalidate_tags(any_client, "user:2")
    _settled(any_client, tag_key("user:2"))
    assert await profile(1) == a
    assert await profile(2) != b
    await count.invalidate_all()
    _settled(any_client, function_key(count.namespace))
    assert await count("x") != c
    assert await profile.peek(1) == a


def test_tags_must_be_strings():
    client = InprocCacheClient(10)
    with pytest.raises(TypeError, match="tags must be a list of tags, not a single string"):
        cached(client, 10, tags="user:1")
    with pytest.raises(ValueError, match="non-empty str"):
        cached(client, 10, tags=["ok", ""])
    with pytest.raises(ValueError, match="non-empty str"):
        invalidate_tags(client, 5)

    @cached(client, 10, tags=lambda x: x)
    def f(x):
        return x

    with pytest.raises(TypeError, match=r"f: tags\(\.\.\.\) result must be a list"):
        f("one-string")


def test_an_entry_from_before_an_invalidation_is_never_served_stale():
    clock = FakeClock()
    client = InprocCacheClient(100, clock=clock)

    @cached(client, ttl=10, tags=["t"])
    def f(x):
        return [x, clock.now]

    first = f(1)
    clock.advance(11)
    invalidate_tags(client, "t")
    assert f.bg()(1) != first  # bg() serves stale entries, but not invalidated ones
    with pytest.raises(CacheMissError):
        f.lazy(2)


def test_stamped_entries_and_revision_records_are_what_the_client_holds():
    client = InprocCacheClient(100)

    @cached(client, ttl=300, tags=["a", "b"], namespace="ns")
    def f(x):
        return x * 2

    f(3)
    stored = client.get(("ns", 3))
    assert isinstance(stored, Stamped) and stored.value == 6
    records = [client.get(k) for k in (function_key("ns"), tag_key("a"), tag_key("b"))]
    assert stored.revisions == tuple(records)
    assert all(isinstance(r, int) for r in records)


def test_a_lost_revision_record_is_a_miss_not_an_old_value():
    client = InprocCacheClient(100)
    calls = []

    @cached(client, ttl=300, tags=["t"])
    def f(x):
        calls.append(x)
        return len(calls)

    f(1)
    client.delete(tag_key("t"))  # evicted, say
    assert f(1) == 2  # a new record, a new revision: the old entry does not match it
    assert f(1) == 2


def test_shared_memcached_two_processes(memcached):
    """Two clients on one server stand for two processes: an invalidation in one is seen
    by the next read of the other."""
    from chorde.clients.memcached import MemcachedClient

    one = MemcachedClient([memcached.address], checksum_key="groups")
    two = MemcachedClient([memcached.address], checksum_key="groups")
    calls = []

    def make(client):
        @cached(client, ttl=300, namespace="shared.f", tags=lambda x: [f"x:{x}"])
        def f(x):
            calls.append(x)
            return [x, len(calls)]

        @cached(client, ttl=300, namespace="shared.g")
        def g(x):
            calls.append(x)
            return [x, len(calls)]

        return f, g

    try:
        f1, g1 = make(one)
        f2, g2 = make(two)
        a, b = f1(1), g1(1)
        assert f2(1) == a and g2(1) == b
        invalidate_tags(one, "x:1")
        g1.invalidate_all()
        assert f2(1) != a and g2(1) != b
        assert f1(1) == f2(1) and g1(1) == g2(1)
    finally:
        one.close()
        two.close()


def test_coherent_clients_drop_their_private_copies(memcached):
    """Under coherence the revision write is broadcast: the other process's in-process
    tier drops its copy of the record, so it sees the invalidation at once."""
    from chorde.clients.coherent import CoherentWrapperClient
    from chorde.clients.memcached import MemcachedClient
    from chorde.clients.tiered import TieredInclusiveClient
    from chorde.mq import LocalBus

    bus = LocalBus()
    clients = [
        CoherentWrapperClient(
            TieredInclusiveClient(
                InprocCacheClient(100),
                MemcachedClient([memcached.address], checksum_key="groups"),
            ),
            bus,
        )
        for _ in range(2)
    ]
    calls = []

    def make(client):
        @cached(client, ttl=300, namespace="coherent.f", tags=["catalog"])
        def f(x):
            calls.append(x)
            return [x, len(calls)]

        return f

    try:
        f1, f2 = make(clients[0]), make(clients[1])
        a = f1(1)
        assert f2(1) == a and f2(1) == a  # the second read is served by its L1
        assert len(calls) == 1
        invalidate_tags(clients[0], "catalog")
        _wait_for(lambda: f2(1) != a)
        assert f1(1) == f2(1)
        f1.invalidate_all()
        n = len(calls)
        f2(1)
        assert len(calls) == n + 1
    finally:
        for client in clients:
            client.close()


def _wait_for(predicate):
    deadline = threading.Event()
    for _ in range(200):
        if predicate():
            return
        deadline.wait(0.01)
    raise AssertionError("condition not reached")


def test_invalidate_all_on_a_private_client_beats_a_computation_in_flight():
    client = InprocCacheClient(100)
    started, release = threading.Event(), threading.Event()
    calls = []

    @cached(client, ttl=300)
    def f(x):
        calls.append(x)
        if len(calls) == 1:
            started.set()
            assert release.wait(WAIT)
        return len(calls)

    worker = threading.Thread(target=f, args=(1,))
    worker.start()
    assert started.wait(WAIT)
    f.invalidate_all()  # while the first computation runs: its result must not be kept
    release.set()
    worker.join(WAIT)
    with pytest.raises(CacheMissError):
        f.peek(1)
    assert f(1) == 2


@pytest.mark.parametrize("store", ["lru", "cuckoo", "lru-notouch"])
def test_invalidate_all_on_a_private_client_every_store(store):
    client = InprocCacheClient(100, store)
    calls = []

    @cached(client, ttl=300, key=lambda x, **kw: (x, tuple(sorted(kw.items()))))
    def keyed(x, **kw):
        calls.append(x)
        return len(calls)

    @cached(client, ttl=300)
    def f(*args, **kwargs):
        calls.append(args)
        return len(calls)

    values = [f(1), f(1, 2), f((1, 2)), f(), f(a=1), keyed(1), keyed(1, y=2)]
    assert [f(1), f(1, 2), f((1, 2)), f(), f(a=1), keyed(1), keyed(1, y=2)] == values
    n = len(calls)
    f.invalidate_all()
    keyed.invalidate_all()
    assert [f(1), f(1, 2), f((1, 2)), f(), f(a=1), keyed(1), keyed(1, y=2)] != values
    assert len(calls) == n + 7
    # the keys stay what cache_key() says they are
    assert f.peek(1) == f(1) and f.peek(a=1) == f(a=1)


def test_functions_sharing_a_namespace_share_invalidate_all():
    client = InprocCacheClient(100)

    @cached(client, ttl=300, namespace="same")
    def one(x):
        return ("one", x)

    @cached(client, ttl=300, namespace="same")
    def two(x):
        return ("two", x)

    assert one(1) == ("one", 1) and two(1) == ("one", 1)  # the same entries
    assert one(a := 2) == ("one", a)
    two.invalidate_all()
    assert one(1) == ("one", 1)
    with pytest.raises(CacheMissError):
        two.peek(2)
