"""MemcachedClient.aupdate/aupdateTtl: compare-and-swap on the native asyncio path."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time

import pytest
from pymemcache.client.base import Client as RawClient

from chorde import CacheMissError
from chorde.clients._pages import PageManifest
from chorde.clients.memcached import MemcachedClient
from chorde.keys import encode_key, memcache_key
from tests.clients.conftest import SECRET

TTL = 300
MB = 1024 * 1024


def test_aupdate_replaces_the_value_and_keeps_or_sets_the_ttl(client):
    async def plus_one_later(v):
        await asyncio.sleep(0)
        return v + 1

    async def scenario():
        await client.aput("n", 1, 100)
        assert await client.aupdate("n", lambda v: v + 1) == 2
        value, left = await client.agetTtl("n")
        assert value == 2 and 90 < left <= 100  # ttl kept
        new, left = await client.aupdateTtl("n", lambda v: v * 10, ttl=5000)
        assert (new, left) == (20, 5000)
        assert 4900 < (await client.agetTtl("n"))[1] <= 5000
        assert await client.aupdate("n", plus_one_later) == 21  # a coroutine function

    asyncio.run(scenario())
    assert client.get("n") == 21  # the blocking path reads what the async one wrote
    assert client.stats.errors == 0


def test_aupdate_of_missing_or_stale_entries_is_a_miss(client):
    client.put("stale", 1, TTL)
    client.expire("stale")

    async def scenario():
        with pytest.raises(CacheMissError):
            await client.aupdate("missing", lambda v: v + 1)
        with pytest.raises(CacheMissError):
            await client.aupdate("stale", lambda v: v + 1)

    asyncio.run(scenario())
    assert client.getTtl("stale")[0] == 1
    assert client.get("missing", None) is None


def test_aupdate_lets_fn_errors_through_and_changes_nothing(client):
    client.put("s", "text", TTL)

    async def scenario():
        with pytest.raises(TypeError):
            await client.aupdate("s", lambda v: v + 1)

    asyncio.run(scenario())
    assert client.get("s") == "text"
    assert client.stats.errors == 0


def test_aupdate_of_a_paged_value_drops_the_old_pages(memcached):
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    big = os.urandom(3 * MB // 2)
    c.put("big", big, TTL)
    raw = RawClient((memcached.host, memcached.port), default_noreply=False)
    item = raw.get(memcache_key("big")[0].encode())
    codec = c._locate("big")[2].state[2]  # (bound to the namespace's generation)
    manifest = codec.loads(item, key=encode_key("big"), offset=8)[0]
    assert isinstance(manifest, PageManifest)
    old_pages = manifest.page_keys(c._internal_prefix)

    async def scenario():
        assert await c.aupdate("big", lambda v: v + b"!") == big + b"!"
        assert await c.aget("big") == big + b"!"
        assert await c.aupdate("big", lambda v: v[:10]) == big[:10]

    asyncio.run(scenario())
    assert c.get("big") == big[:10]
    # The pages go by noreply deletes: the server may take a moment.
    deadline = time.monotonic() + 5
    while any(raw.get(p) is not None for p in old_pages) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [p for p in old_pages if raw.get(p) is not None] == []
    raw.close()
    c.close()


def test_concurrent_aupdates_from_tasks_and_threads_lose_no_increment(memcached):
    shared = MemcachedClient([memcached.address], checksum_key=SECRET)
    other = MemcachedClient([memcached.address], checksum_key=SECRET)
    shared.put("counter", 0, TTL)
    loops, tasks, rounds = 2, 3, 20
    errors: list[BaseException] = []
    start = threading.Barrier(loops + 2)

    async def bump(c):
        for _ in range(rounds):
            await c.aupdate("counter", lambda v: v + 1)

    def in_a_loop():
        # Every thread runs its own event loop over the one shared client.
        async def main():
            await asyncio.gather(*(bump(shared) for _ in range(tasks)))

        try:
            start.wait(10)
            asyncio.run(main())
        except BaseException as exc:  # reported below
            errors.append(exc)

    def blocking(c):
        try:
            start.wait(10)
            for _ in range(rounds):
                c.update("counter", lambda v: v + 1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=in_a_loop) for _ in range(loops)]
    threads += [threading.Thread(target=blocking, args=(c,)) for c in (shared, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert shared.get("counter") == (loops * tasks + 2) * rounds
    assert shared.stats.errors == 0
    shared.close()
    other.close()


def test_aupdate_on_a_down_server_is_a_miss(memcached):
    c = MemcachedClient(
        [memcached.address],
        checksum_key=SECRET,
        connect_timeout=0.3,
        timeout=0.3,
        retry_interval=0.3,
    )
    c.put("n", 1, TTL)
    memcached.stop()

    async def scenario():
        with pytest.raises(CacheMissError):
            await c.aupdate("n", lambda v: v + 1)

    asyncio.run(scenario())
    assert c.stats.errors >= 1
    c.close()


def test_aupdate_needs_no_executor(client):
    class NoExecutor(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            raise AssertionError(f"executor used for {fn!r}")

    client.put("n", 1, TTL)

    async def scenario():
        asyncio.get_running_loop().set_default_executor(NoExecutor(max_workers=1))
        return await client.aupdateTtl("n", lambda v: v + 1)

    assert asyncio.run(scenario())[0] == 2
