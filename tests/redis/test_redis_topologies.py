"""Each way to reach Redis, against real servers: TLS, a unix socket, ACL users and
passwords, database numbers, Sentinel (with a failover), Cluster (slots, batches, a failover).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from chorde.clients import from_url
from chorde.clients.redis import RedisClient
from tests.redis_servers import tls_files, wait_for_master
from tests.servers import wait_until

SECRET = "redis-test-secret"
TTL = 300


def _works(client, key="k"):
    client.put(key, {"via": repr(client)}, TTL)
    assert client.get(key) == {"via": repr(client)}
    assert dict(client.getMulti([key, "absent"], None))[key] is not None

    async def awaited():
        assert await client.aget(key) is not None

    asyncio.run(awaited())
    assert client.stats.errors == 0


def test_tls(redis_factory, tmp_path):
    files = tls_files(tmp_path)
    server = redis_factory(tls=files)
    url = f"rediss://{server.address}?ssl_ca_certs={files['ca']}"
    client = from_url(url, checksum_key=SECRET)
    _works(client)
    client.close()
    # Without the CA the certificate is refused: a miss, never an exception.
    untrusted = from_url(f"rediss://{server.address}?retry_interval=0", checksum_key=SECRET)
    assert untrusted.get("k", None) is None and untrusted.stats.errors
    untrusted.close()


def test_unix_socket(redis_factory):
    server = redis_factory(unix_socket=True)
    client = from_url(f"redis+unix://{server.socket_path}?db=3", checksum_key=SECRET)
    _works(client)
    assert server.call("SELECT", "3") == "OK"
    client.close()


def test_acl_user_and_password(redis_factory):
    server = redis_factory(password="s3cret", users={"app": "on >apppass ~* &* +@all"})
    url = f"redis://{server.address}?username=app"
    client = from_url(url, checksum_key=SECRET, password="apppass")
    _works(client)
    client.close()
    default_user = RedisClient(server.address, SECRET, password="s3cret")
    _works(default_user, "k2")
    default_user.close()
    wrong = RedisClient(server.address, SECRET, username="app", password="nope")
    assert wrong.get("k", None) is None and wrong.stats.errors == 1
    wrong.close()


def test_database_numbers_are_apart(redis_server):
    one = from_url(f"redis://{redis_server.address}/1", checksum_key=SECRET)
    two = from_url(f"redis://{redis_server.address}/2", checksum_key=SECRET)
    one.put("k", 1, TTL)
    assert two.get("k", None) is None and one.get("k") == 1
    one.close()
    two.close()


def test_sentinel_follows_the_master_through_a_failover(sentinel_group, figures):
    url = sentinel_group.url + "?retry_interval=0.2&timeout=0.5"
    client = from_url(url, checksum_key=SECRET)
    _works(client)
    old = sentinel_group.current_master()
    sentinel_group.master.kill()
    started = time.monotonic()
    outcomes = []

    def follows():
        try:
            client.get("k", None)
            client.put("probe", 1, TTL)
            return client.get("probe", None) == 1
        except Exception as exc:  # never: every call degrades to a miss
            outcomes.append(exc)
            return True

    assert wait_until(follows, 30)
    assert not outcomes
    figures.record(
        "sentinel failover, master killed to first write served", time.monotonic() - started
    )
    assert wait_for_master(sentinel_group, old, 5)
    assert client.get("probe") == 1
    client.close()


def test_cluster_spreads_keys_and_batches_by_node(redis_cluster, namespace):
    client = RedisClient(
        cluster=[redis_cluster.nodes[0].address], checksum_key=SECRET, namespace=namespace
    )
    items = {i: f"v{i}" for i in range(300)}
    client.putMulti(items, TTL)
    counts = [int(n.call("DBSIZE")) for n in redis_cluster.master_nodes()]
    assert all(count > 50 for count in counts), counts  # every master holds some
    assert dict(client.getMulti(list(items))) == items
    assert dict(client.getMulti([*items, "absent"], None))["absent"] is None
    client.clear()
    assert dict(client.getMulti(list(items), None)) == dict.fromkeys(items)
    client.put("hash {tag} key", 1, TTL)
    assert client.get("hash {tag} key") == 1
    assert client.stats.errors == 0
    client.close()


def test_cluster_by_url_and_asyncio(redis_cluster, namespace):
    url = redis_cluster.url + f"?namespace={namespace}"
    client = from_url(url, checksum_key=SECRET)

    async def scenario():
        await client.aputMulti({i: i for i in range(50)}, TTL)
        assert dict(await client.agetMulti(range(50))) == {i: i for i in range(50)}
        assert await client.aincr(7) == 8

    asyncio.run(scenario())
    assert client.capacity > 0 and client.usage > 0
    client.close()


def _replicas_caught_up(node) -> bool:
    """Whether every replica of the master ``node`` has acknowledged all its writes."""
    _, offset, replicas = node.call("ROLE")
    return bool(replicas) and all(int(r[2]) >= int(offset) for r in replicas)


def test_cluster_killed_master_reads_as_misses_until_its_replica_takes_over(fresh_cluster, figures):
    client = RedisClient(
        cluster=[n.address for n in fresh_cluster.nodes],
        checksum_key=SECRET,
        timeout=0.5,
        retry_interval=0.2,
    )
    items = {i: i for i in range(200)}
    client.putMulti(items, TTL)
    victim = fresh_cluster.master_nodes()[0]
    # (replication is asynchronous: on a loaded machine the replica may not have them yet)
    assert wait_until(lambda: _replicas_caught_up(victim), 10)
    victim.kill()
    started = time.monotonic()
    errors = []

    def everything_back():
        try:
            got = dict(client.getMulti(list(items), None))
            for k in (1, 2, 3):
                client.get(k, None)
        except Exception as exc:
            errors.append(exc)
            return True
        return got == items

    # Values written before the kill are on the replica that takes over (seen above).
    assert wait_until(everything_back, 30)
    assert not errors
    figures.record("cluster failover, master killed to all keys served", time.monotonic() - started)
    client.put("after", 1, TTL)
    assert client.get("after") == 1
    client.close()


@pytest.mark.parametrize("scheme", ["valkey", "redis"])
def test_valkey_schemes_are_redis_schemes(redis_server, scheme):
    client = from_url(f"{scheme}://{redis_server.address}", checksum_key=SECRET)
    _works(client)
    client.close()
