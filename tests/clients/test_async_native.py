"""Native async survives composition: awaitable calls never hop to an executor thread.

The loop's default executor is replaced by one that fails on use: an awaitable call on a
tiered, namespace or write-behind client over in-process (and memcached) tiers must await
the tiers' own awaitables, L1 hits included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pytest

from chorde.clients import from_url
from chorde.clients.asyncache import AsyncWriteCacheClient
from chorde.clients.namespace import NamespaceWrapper


class NoExecutor(concurrent.futures.ThreadPoolExecutor):
    """An executor that fails the test if anything is submitted to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.used: list[Any] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.used.append(fn)
        raise AssertionError(f"an executor thread was used for {fn!r}")


@pytest.fixture
async def no_executor() -> NoExecutor:
    executor = NoExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    return executor


async def _exercise(client: Any) -> None:
    await client.aput("k", 1, 60)
    assert await client.aget("k") == 1
    assert (await client.agetTtl("k"))[0] == 1
    assert await client.acontains("k")
    assert dict(await client.agetMulti(["k", "z"], None)) == {"k": 1, "z": None}
    await client.aputMulti({"a": 1, "b": 2}, 60)
    assert await client.arenew("a", 60)
    await client.aexpire("a")
    assert await client.aget("a", None) is None
    await client.adelete("b")
    assert await client.aget("b", None) is None


async def test_tiered_inproc(no_executor: NoExecutor) -> None:
    client = from_url(["inproc://?size=10", "inproc://?size=100"])
    await _exercise(client)
    assert await client.aadd("new", 1, 60)
    assert not no_executor.used


async def test_tiered_l1_hit_over_memcached(no_executor: NoExecutor, memcached: Any) -> None:
    client = from_url(["inproc://?size=10", f"memcached://{memcached.address}"], checksum_key="k")
    try:
        await client.aput("k", 1, 60)  # memcached's own asyncio transport
        l1 = client.clients[0]  # type: ignore[attr-defined]
        assert await client.aget("k") == 1  # an L1 hit
        l1.delete("k")
        assert await client.aget("k") == 1  # from memcached, promoted into L1
        assert l1.get("k") == 1
        assert not no_executor.used
    finally:
        client.close()


async def test_namespace(no_executor: NoExecutor) -> None:
    client = NamespaceWrapper("ns", from_url("inproc://?size=100"))
    await _exercise(client)
    await client.aclear()
    assert await client.aget("k", None) is None
    assert not no_executor.used


async def test_write_behind_reads_and_queued_writes(no_executor: NoExecutor) -> None:
    client = AsyncWriteCacheClient(from_url("inproc://?size=100"))
    try:
        await client.aput("k", 1, 60)
        assert await client.aget("k") == 1  # from the pending write, or the client
        await client.adelete("k")
        assert await client.aget("k", None) is None
        assert dict(await client.agetTtlMulti(["k"], None))["k"] == (None, -1.0)
        assert not no_executor.used
    finally:
        client.close()
