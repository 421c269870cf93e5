"""The asyncio driver shares a read in flight: concurrent lookups of one key cost the
server one read, never across a write begun here, and a cancelled read is not passed on."""

from __future__ import annotations

import asyncio

from chorde.clients.inproc import InprocCacheClient
from chorde.http import ResponseCache


class _SlowReads(InprocCacheClient):
    """An in-process client whose awaited reads take a while, as a remote server's do."""

    def __init__(self) -> None:
        super().__init__(100)
        self.reads: list[object] = []

    async def aget(self, key, default=None):
        self.reads.append(key)
        await asyncio.sleep(0.05)
        return super().get(key, default)


def _request(cache: ResponseCache, path: str = "/page"):
    return cache.request(
        method="GET", scheme="http", hosts=["a.example"], path=path, query="", headers=[]
    )


def test_concurrent_lookups_of_one_key_share_one_read():
    client = _SlowReads()
    cache = ResponseCache(client)
    req, other = _request(cache), _request(cache, "/other")

    async def main():
        return await asyncio.gather(*[cache.alookup(req) for _ in range(10)], cache.alookup(other))

    assert asyncio.run(main()) == [None] * 11
    assert client.reads == [req.key, other.key]
    assert cache._reads == {}  # nothing left behind


def test_a_read_begun_before_a_write_is_not_shared_after_it():
    client = _SlowReads()
    cache = ResponseCache(client)
    req = _request(cache)

    async def main():
        first = asyncio.create_task(cache.alookup(req))
        await asyncio.sleep(0.01)  # the first read is under way
        joined = asyncio.create_task(cache.alookup(req))  # joins it
        await asyncio.sleep(0)
        await cache.adelete(req.key)  # a write begins (and ends)
        after = asyncio.create_task(cache.alookup(req))  # reads on its own
        return await asyncio.gather(first, joined, after)

    assert asyncio.run(main()) == [None, None, None]
    assert client.reads == [req.key, req.key]


def test_a_write_through_the_blocking_driver_ends_sharing_too():
    # A purge from a worker thread (a sync endpoint) while an awaited read is in flight:
    # a lookup after it returns must not be given the read begun before it.
    client = _SlowReads()
    cache = ResponseCache(client)
    req = _request(cache)

    async def main():
        first = asyncio.create_task(cache.alookup(req))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(cache.delete, req.key)
        after = asyncio.create_task(cache.alookup(req))
        return await asyncio.gather(first, after)

    assert asyncio.run(main()) == [None, None]
    assert client.reads == [req.key, req.key]


def test_a_cancelled_read_is_not_passed_on():
    client = _SlowReads()
    cache = ResponseCache(client)
    req = _request(cache)

    async def main():
        first = asyncio.create_task(cache.alookup(req))
        await asyncio.sleep(0.01)
        joined = asyncio.create_task(cache.alookup(req))
        await asyncio.sleep(0.01)
        first.cancel()  # (a client that went away)
        result = await joined  # reads again instead of failing
        assert first.cancelled()
        return result

    assert asyncio.run(main()) is None
    assert client.reads == [req.key, req.key]
    assert cache._reads == {}
