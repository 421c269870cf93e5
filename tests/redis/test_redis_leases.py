"""Redis leases (chorde.leases): ``SET NX PX`` of a lease key beside the entry, so ``@cached``
computes once across clients on Redis as it does on memcached.

Several clients stand for several processes; a real ``redis-server`` (and the session's
shared Cluster) holds everything.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from chorde.clients.redis import RedisClient
from chorde.decorators import cached
from chorde.leases import BUSY, HIT, UNAVAILABLE, WON, live, offered
from chorde.sentinel import NONE
from tests.redis.conftest import SECRET
from tests.servers import wait_until

LEASE = 0.5
WAIT = 10
_names = itertools.count()


def never(value, ttl):
    return False


@pytest.fixture
def make(redis_server):
    made = []
    namespace = f"lease{next(_names)}"

    def make(**options):
        options.setdefault("lease_ttl", LEASE)
        c = RedisClient(redis_server.address, checksum_key=SECRET, namespace=namespace, **options)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_a_miss_is_won_once_and_ended_by_the_value(make):
    a, b = make(), make()
    won = a.lease_read("k", live)
    assert won.state == WON and won.value is NONE
    assert b.lease_read("k", live).state == BUSY
    a.lease_put("k", "value", 30, won.token)
    hit = b.lease_read("k", live)
    assert (hit.state, hit.value) == (HIT, "value") and 29 < hit.ttl <= 30
    assert b.lease_read("k", never).state == WON  # no lease left out


def test_a_stale_entry_is_won_once_and_served_meanwhile(make):
    a, b = make(), make()
    a.put("k", "old", 30)
    a.expire("k")
    won = a.lease_read("k", live)
    assert (won.state, won.value) == (WON, "old")
    busy = b.lease_read("k", live)
    assert (busy.state, busy.value) == (BUSY, "old") and busy.ttl <= 0
    a.lease_release("k", won.token)
    assert b.lease_read("k", live).state == WON  # released: at once
    assert b.getTtl("k")[0] == "old"  # nothing stored: the stale entry stays


def test_a_lease_whose_winner_vanished_lapses(make):
    a, b = make(), make()
    assert a.lease_read("k", live).state == WON
    assert wait_until(lambda: b.lease_read("k", live).state == WON, LEASE + 5)


def test_a_release_by_another_token_leaves_the_lease(make):
    a, b = make(lease_ttl=30), make(lease_ttl=30)
    won = a.lease_read("k", live)
    b.lease_release("k", "not the token")
    assert b.lease_read("k", live).state == BUSY
    a.lease_release("k", won.token)
    assert b.lease_read("k", live).state == WON


def test_leases_off_and_options(redis_server):
    c = RedisClient(redis_server.address, checksum_key=SECRET, lease_ttl=0)
    try:
        assert not offered(c)
    finally:
        c.close()
    from chorde.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="lease_ttl"):
        RedisClient(redis_server.address, checksum_key=SECRET, lease_ttl=float("inf"))


def test_a_down_server_hands_out_no_lease(unused_port):
    c = RedisClient(f"127.0.0.1:{unused_port}", checksum_key=SECRET, timeout=0.5)
    try:
        assert c.lease_read("k", live).state == UNAVAILABLE
    finally:
        c.close()


def test_cached_computes_once_across_clients(make):
    runs = []
    lock = threading.Lock()

    def compute(x):
        with lock:
            runs.append(x)
        time.sleep(0.3)
        return f"{x}:{len(runs)}"

    fns = [cached(make(), 60, namespace="f")(compute) for _ in range(4)]
    results = []
    threads = [
        threading.Thread(target=lambda f=f: results.append(f(1))) for f in fns for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert results == ["1:1"] * 20 and runs == [1]
    assert sum(f.cache_info().claims for f in fns) == 1


async def test_awaitable_leases_and_coroutine_functions(make):
    a, b = make(), make()
    won = await a.alease_read("k", live)
    assert won.state == WON and (await b.alease_read("k", live)).state == BUSY
    await a.alease_put("k", 1, 30, won.token)
    assert (await b.alease_read("k", live)).value == 1
    runs = []

    async def compute(x):
        runs.append(x)
        await asyncio.sleep(0.2)
        return x * 2

    fns = [cached(c, 60, namespace="g")(compute) for c in (a, b)]
    assert await asyncio.gather(*(f(2) for f in fns for _ in range(3))) == [4] * 6
    assert runs == [2]


def test_leases_in_a_cluster(redis_cluster, namespace):
    clients = [
        RedisClient(
            cluster=[redis_cluster.nodes[0].address],
            checksum_key=SECRET,
            namespace=namespace,
            lease_ttl=WAIT,  # (not a lapse test: a loaded machine must not lapse it)
        )
        for _ in range(2)
    ]
    a, b = clients
    try:
        for key in ("k1", "k2", ("user", 7), "x" * 300):  # spread over slots (and a digest)
            won = a.lease_read(key, live)
            assert won.state == WON
            assert b.lease_read(key, live).state == BUSY
            a.lease_put(key, key, 30, won.token)
            assert b.lease_read(key, live).value == key
    finally:
        for c in clients:
            c.close()
