"""The connections a RedisClient keeps between calls (one server, unbounded pool), blocking
and per event loop: what the server closed meanwhile is replaced without a miss, threads and
tasks never share one, a cancelled call leaves nothing unread behind, a forked child opens
its own, and a bounded pool (``max_connections``) still serves every operation."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from chorde.clients.redis import RedisClient
from tests.servers import wait_until

TTL = 300
SECRET = "redis-test-secret"


def raw_client(server):
    import redis

    return redis.Redis(host=server.host, port=server.port)


def _clients(raw) -> int:
    return int(raw.info("clients")["connected_clients"])


def test_connections_the_server_closed_while_idle_are_replaced_without_a_miss(
    redis_server, redis_client
):
    raw = raw_client(redis_server)
    redis_client.put("k", "v", TTL)
    assert redis_client.get("k") == "v"  # (its connection now waits for the next call)
    # The server drops every connection but this one (a restart, an idle timeout ...).
    assert raw.client_kill_filter(_type="normal", skipme=True) >= 1
    assert wait_until(lambda: _clients(raw) == 1, 5)
    assert redis_client.get("k") == "v"
    redis_client.put("k", "w", TTL)
    assert redis_client.get("k") == "w"
    assert redis_client.stats.errors == 0


async def test_awaited_calls_replace_connections_the_server_closed_without_a_miss(
    redis_server, redis_client
):
    raw = raw_client(redis_server)
    await redis_client.aput("k", "v", TTL)
    assert await redis_client.aget("k") == "v"
    assert raw.client_kill_filter(_type="normal", skipme=True) >= 1
    for _ in range(100):  # (the event loop runs meanwhile, and sees the sockets close)
        if _clients(raw) == 1:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    assert await redis_client.aget("k") == "v"
    await redis_client.aput("k", "w", TTL)
    assert await redis_client.aget("k") == "w"
    assert redis_client.stats.errors == 0


async def test_tasks_never_share_a_connection(redis_client):
    async def work(n: int) -> bool:
        for i in range(50):
            await redis_client.aput(("t", str(n)), (n, i), TTL)
            if await redis_client.aget(("t", str(n)), None) != (n, i):
                return False
        return True

    assert all(await asyncio.gather(*(work(n) for n in range(20))))
    assert redis_client.stats.errors == 0


async def test_a_cancelled_call_leaves_no_reply_behind(redis_client):
    for n in range(20):
        await redis_client.aput(("c", str(n)), n, TTL)
    for n in range(20):
        task = asyncio.create_task(redis_client.aget(("c", str(n))))
        for _ in range(n % 4):  # (cancelled at each step of its call in turn)
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await redis_client.aget(("c", str((n + 1) % 20))) == (n + 1) % 20
    redis_client.put("sync", 1, TTL)
    assert redis_client.get("sync") == 1


def test_threads_never_share_a_connection(redis_client):
    failures: list[str] = []

    def work(n: int) -> None:
        for i in range(200):
            key = f"t{n}"
            redis_client.put(key, (n, i), TTL)
            if redis_client.get(key, None) != (n, i):
                failures.append(f"thread {n}, round {i}")
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures
    assert redis_client.stats.errors == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_connections_of_its_own(redis_client):
    redis_client.put("k", "v", TTL)
    execute = redis_client._topology.execute
    parent_id = execute("CLIENT", "ID")
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        ok = False
        try:
            ok = execute("CLIENT", "ID") != parent_id and redis_client.get("k") == "v"
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert execute("CLIENT", "ID") == parent_id  # (the parent's connection, untouched)
    assert redis_client.get("k") == "v"


def test_a_bounded_pool_serves_every_operation(redis_server):
    c = RedisClient(redis_server.address, checksum_key=SECRET, max_connections=1)
    try:
        c.put("a", 1, TTL)
        assert c.get("a") == 1
        assert c.putMulti({"b": 2, "c": 3}, TTL) == []  # (a pipeline: the pool's connection)
        assert dict(c.getMulti(["a", "b", "c"])) == {"a": 1, "b": 2, "c": 3}
        c.purge()
        c.clear()
        assert c.get("a", None) is None
        assert c.stats.errors == 0
    finally:
        c.close()


def test_commands_are_packed_as_redis_py_packs_them():
    import redis

    from chorde.clients.redis import topology

    conn = redis.Redis().connection_pool.make_connection()  # (never connected)
    for args in [
        ("MGET", b"k", b"~gen"),
        ("SET", b"k", bytes(range(256)), "PX", 61_000),
        ("EVALSHA", "f" * 40, 2, b"k", b"g", b"payload", 10**15),
        ("EVAL", "return 1", 1, b"k", repr(1.5e9), -1, 2.5, "ünïcode"),
    ]:
        assert b"".join(topology._packed(conn, args)) == b"".join(conn.pack_command(*args))
    with pytest.raises(redis.exceptions.DataError):  # (what redis-py's packer says)
        topology._packed(conn, ("SET", b"k", None))
