"""RedisClient on one real server: what it stores, namespaces and generations, atomicity,
client objects of the user's, asyncio from several loops, bad input."""

from __future__ import annotations

import asyncio
import pickle
import struct
import threading
import time

import pytest

from chorde import CacheMissError, ConfigurationError
from chorde.clients.redis import RedisClient, scripts
from chorde.keys import encode_key
from chorde.serialization import Serializer

TTL = 300
SECRET = "redis-test-secret"  # (the conftest's redis_client signs with it too)


def raw_client(server):
    import redis

    return redis.Redis(host=server.host, port=server.port)


def test_the_stored_value_is_generation_then_a_signed_payload(redis_server, redis_client):
    redis_client.put("k", {"v": 1}, TTL)
    stored = raw_client(redis_server).get(b"sk")
    assert stored[:8] == bytes(8)  # generation zero until a clear
    value, _ = Serializer(SECRET).loads(stored, key=encode_key("k"), offset=8)
    assert value == {"v": 1}
    # The Redis TTL outlives the logical one by stale_grace.
    pttl = raw_client(redis_server).pttl(b"sk")
    assert (TTL + 50) * 1000 < pttl <= (TTL + 60) * 1000


def test_the_add_script_reads_the_expiry_where_the_serializer_writes_it():
    payload = Serializer(SECRET).dumps(1, key=b"sk", expires=1234.5)
    # ADD reads the big-endian double at Lua position 21 of generation + payload.
    assert struct.unpack_from(">d", bytes(8) + payload, 20)[0] == 1234.5
    assert "struct.unpack('>d', cur, 21)" in scripts.ADD.source


def test_long_keys_become_digests_and_still_round_trip(redis_server, redis_client):
    key = ("x" * 500, 1)
    redis_client.put(key, "long", TTL)
    assert redis_client.get(key) == "long"
    keys = raw_client(redis_server).keys(b"#*")
    assert len(keys) == 1 and len(keys[0]) < 60


def test_equal_tuple_keys_of_other_types_stay_apart(redis_client):
    # ("k", 1), ("k", 1.0) and ("k", True) are equal (one dict key) but encode apart; tuples
    # of str (remembered once mapped) and their str-subclass twins encode alike.
    keys = [("k", 1), ("k", 1.0), ("k", True), ("k", "1"), ("k", ("1",)), ("k", (1,))]
    for _ in range(2):  # (the second round maps from the memo)
        for i, key in enumerate(keys):
            redis_client.put(key, i, TTL)
        assert [redis_client.get(key) for key in keys] == list(range(len(keys)))

    class Name(str):
        pass

    assert redis_client.get(("k", Name("1"))) == 3
    assert dict(redis_client.getMulti([("k", 1.0), ("k", "1")])) == {("k", 1.0): 1, ("k", "1"): 3}


def test_hostile_truncated_foreign_and_oversized_values_are_misses(redis_server, redis_client):
    r = raw_client(redis_server)
    evil = pickle.dumps(Exception("would run"))
    r.set(b"sa", bytes(8) + evil)  # foreign, unsigned
    redis_client.put("b", "real", TTL)
    r.set(b"sb", r.get(b"sb")[:-5])  # truncated
    other = RedisClient(redis_server.address, checksum_key="another secret")
    other.put("c", "theirs", TTL)  # signed with another key
    small = RedisClient(redis_server.address, checksum_key=SECRET, max_value_size=1000)
    redis_client.put("d", "x" * 5000, TTL)  # bigger than small's max_value_size
    for key in "abc":
        assert redis_client.get(key, None) is None
    assert small.get("d", None) is None
    assert redis_client.get("d") == "x" * 5000
    assert redis_client.stats.errors == 3 and small.stats.errors == 1
    other.close()
    small.close()


def test_namespaces_are_apart_and_clear_is_per_namespace(redis_server):
    a = RedisClient(redis_server.address, checksum_key=SECRET, namespace="a")
    a2 = RedisClient(redis_server.address, checksum_key=SECRET, namespace="a")
    b = RedisClient(redis_server.address, checksum_key=SECRET, namespace="b")
    a.put("k", "in a", TTL)
    b.put("k", "in b", TTL)
    assert a2.get("k") == "in a" and b.get("k") == "in b"
    a.clear()
    # Seen at once by the other client of the namespace; the other namespace keeps its own.
    assert a2.get("k", None) is None and a.get("k", None) is None
    assert b.get("k") == "in b"
    a2.put("k", "again", TTL)
    assert a.get("k") == "again"
    assert raw_client(redis_server).dbsize() == 3  # a:sk, b:sk and a~gen: no FLUSHDB
    for c in (a, a2, b):
        c.close()


def test_purge_hides_expired_entries_for_every_client(redis_server):
    a = RedisClient(redis_server.address, checksum_key=SECRET)
    b = RedisClient(redis_server.address, checksum_key=SECRET)
    a.put("old", 1, 0)
    a.put("new", 2, TTL)
    assert b.getTtl("old")[0] == 1  # stale but held
    a.purge()
    assert b.getTtl("old", None) == (None, -1.0)
    assert b.get("new") == 2
    a.close()
    b.close()


def test_add_is_atomic_across_clients(redis_server):
    clients = [RedisClient(redis_server.address, checksum_key=SECRET) for _ in range(8)]
    wins = []
    start = threading.Barrier(len(clients), timeout=10)

    def race(i, c):
        start.wait()
        if c.add("lock", i, TTL):
            wins.append(i)

    threads = [threading.Thread(target=race, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(wins) == 1
    assert clients[0].get("lock") == wins[0]
    for c in clients:
        c.close()


def test_concurrent_updates_from_many_clients_lose_nothing(redis_server):
    clients = [RedisClient(redis_server.address, checksum_key=SECRET) for _ in range(4)]
    clients[0].put("n", 0, TTL)

    def work(c):
        for _ in range(50):
            c.incr("n")

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert clients[0].get("n") == 200
    for c in clients:
        c.close()


def test_a_put_racing_another_clients_clear_is_at_worst_a_miss(redis_server):
    a = RedisClient(redis_server.address, checksum_key=SECRET, generation_check=0.2)
    b = RedisClient(redis_server.address, checksum_key=SECRET)
    a.put("k", "before", TTL)
    a.get("k")  # a has just read generation zero, and trusts it for 0.2 s
    b.clear()
    a.put("k", "after the clear", TTL)  # stamped with the generation a read: lost
    assert b.get("k", None) is None  # a miss, never "before"
    time.sleep(0.3)  # a no longer trusts what it read: the script stamps the current one
    a.put("k", "later", TTL)
    assert b.get("k") == "later"
    always = RedisClient(redis_server.address, checksum_key=SECRET, generation_check=0)
    always.get("k")
    b.clear()
    always.put("k", "right after", TTL)  # every put a script: lands in the new generation
    assert b.get("k") == "right after"
    for c in (a, b, always):
        c.close()


def test_a_server_that_forgot_the_scripts_gets_them_again(redis_server, redis_client):
    redis_client.put("k", 1, TTL)
    raw_client(redis_server).script_flush()
    redis_client.put("k", 2, TTL)
    assert redis_client.add("j", 3, TTL)
    redis_client.putMulti({"a": 1, "b": 2}, TTL)
    raw_client(redis_server).script_flush()
    redis_client.purge()
    assert dict(redis_client.getMulti(["k", "j", "a", "b"])) == {"k": 2, "j": 3, "a": 1, "b": 2}
    assert redis_client.stats.errors == 0


def test_blocking_and_asyncio_read_each_others_writes_from_several_loops(redis_client):
    redis_client.put("sync", 1, TTL)

    async def scenario(n):
        assert await redis_client.aget("sync") == 1
        await redis_client.aput(("async", n), n, TTL)
        assert await redis_client.aupdate(("async", n), lambda v: v * 10) == n * 10

    for n in range(3):  # a loop each (asyncio.run), each closing its connections at its end
        asyncio.run(scenario(n))
    assert [redis_client.get(("async", n)) for n in range(3)] == [0, 10, 20]


def test_aupdate_takes_a_coroutine_function(redis_client):
    redis_client.put("n", 1, TTL)

    async def double(v):
        await asyncio.sleep(0)
        return v * 2

    async def scenario():
        return await redis_client.aupdate("n", double)

    assert asyncio.run(scenario()) == 2


def test_a_client_object_of_your_own(redis_server):
    import redis
    import redis.asyncio

    mine = redis.Redis(host=redis_server.host, port=redis_server.port)
    c = RedisClient(mine, checksum_key=SECRET)
    c.put("k", "v", TTL)
    assert c.get("k") == "v"
    c.close()
    assert mine.ping()  # not closed: it is the user's

    async def scenario():
        amine = redis.asyncio.Redis(host=redis_server.host, port=redis_server.port)
        ac = RedisClient(mine, checksum_key=SECRET, async_client=amine)
        assert await ac.aget("k") == "v"
        await amine.aclose()

    asyncio.run(scenario())

    async def through_an_executor():  # no asyncio twin given
        return await RedisClient(mine, checksum_key=SECRET).aget("k")

    assert asyncio.run(through_an_executor()) == "v"


def test_a_valkey_client_object_is_taken_like_redis_py(redis_server):
    valkey = pytest.importorskip("valkey", reason="valkey-py is not installed")
    c = RedisClient(valkey.Valkey(host=redis_server.host, port=redis_server.port), SECRET)
    c.put("k", "v", TTL)
    assert c.get("k") == "v"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"checksum_key": None}, "checksum_key"),
        ({"namespace": "a{b}"}, "namespace"),
        ({"db": -1}, "db"),
        ({"timeout": -1}, "timeout"),
        ({"sentinels": ["h:1"], "cluster": ["h:2"]}, "at most one"),
        ({"sentinels": []}, "at least one sentinel"),
        ({"cluster": ["h:2"], "db": 3}, "only db 0"),
        ({"server": "h:notaport"}, "bad port"),
        ({"server": object()}, "execute_command"),
    ],
)
def test_bad_configuration_is_named(options, message):
    options = {"checksum_key": SECRET, **options}
    with pytest.raises((ConfigurationError, ValueError), match=message):
        RedisClient(**options)


def test_bad_keys_and_ttls_raise_before_any_io(redis_client):
    with pytest.raises(TypeError, match="cannot encode cache key"):
        redis_client.put(object(), 1, TTL)
    with pytest.raises(ValueError, match="ttl"):
        redis_client.put("k", 1, -1)
    with pytest.raises(CacheMissError):
        redis_client.update("absent", lambda v: v)


def test_the_redis_py_clients_underneath_are_reachable(redis_server, redis_client):
    # For what the contract does not cover (a coherence bus's pub/sub ...), on the same
    # servers, credentials and timeouts.
    assert redis_client.redis_client().ping()
    pubsub = redis_client.redis_client().pubsub()
    pubsub.subscribe("news")
    assert redis_client.redis_client().publish("news", b"hello") == 1
    pubsub.close()

    async def scenario():
        aclient = redis_client.redis_aclient()
        assert aclient is redis_client.redis_aclient()  # one per event loop
        assert await aclient.ping()

    asyncio.run(scenario())
    import redis

    mine = redis.Redis(host=redis_server.host, port=redis_server.port)
    given = RedisClient(mine, checksum_key=SECRET)
    assert given.redis_client() is mine

    async def no_twin():
        return given.redis_aclient()

    assert asyncio.run(no_twin()) is None


def test_an_empty_multi_get_asks_the_server_nothing(redis_server, redis_client):
    def mgets():
        stats = raw_client(redis_server).info("commandstats")
        return stats.get("cmdstat_mget", {}).get("calls", 0)

    redis_client.put("k", 1, TTL)
    before = mgets()
    assert list(redis_client.getMulti([])) == []
    assert list(redis_client.getTtlMulti([], None)) == []
    assert asyncio.run(redis_client.agetMulti([])) == []
    assert mgets() == before
    assert dict(redis_client.getMulti(["k", "k", "z"], None)) == {"k": 1, "z": None}
    assert mgets() == before + 1
