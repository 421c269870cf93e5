"""The async twin of Django's BaseCacheTests: every ``a*`` method, on every stack.

Django 5.2's own suite never awaits the backend, so this mirrors its sync tests with the
awaitable methods, with the same expectations.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
import uuid
import warnings
from typing import Any

import pytest
from django.core.cache import CacheKeyWarning

from chorde_django import ChordeCache

_BUILT: dict[int, tuple[str, dict[str, Any]]] = {}


@pytest.fixture(params=["inproc", "memcached", "tiered"])
def cache(request: pytest.FixtureRequest) -> ChordeCache:
    """A fresh backend; aliases sharing its store are built by ``_alias``."""
    if request.param == "inproc":
        location, options = f"a-{uuid.uuid4().hex}", {"CLIENT": "inproc"}
    else:
        location = request.getfixturevalue("memcached").address
        options = {"CLIENT": request.param, "NAMESPACE": f"a{uuid.uuid4().hex[:12]}"}
    backend = ChordeCache(location, {"OPTIONS": options})
    _BUILT[id(backend)] = (location, options)
    return backend


def _alias(cache: ChordeCache, **params: Any) -> ChordeCache:
    """Another backend over the same store with other KEY_PREFIX/VERSION (as an alias)."""
    location, options = _BUILT[id(cache)]
    return ChordeCache(location, {"OPTIONS": options, **params})


async def test_simple_and_none(cache: ChordeCache) -> None:
    await cache.aset("key", "value")
    assert await cache.aget("key") == "value"
    assert await cache.aget("missing") is None
    assert await cache.aget("missing", "default") == "default"
    await cache.aset("null", None)
    assert await cache.aget("null", "default") is None
    assert await cache.ahas_key("null") is True
    assert await cache.ahas_key("missing") is False


async def test_aadd(cache: ChordeCache) -> None:
    assert await cache.aadd("addkey1", "value") is True
    assert await cache.aadd("addkey1", "newvalue") is False
    assert await cache.aget("addkey1") == "value"
    assert await cache.aadd("zero", "v", 0) is True
    assert await cache.aget("zero") is None


async def test_prefix_and_versions(cache: ChordeCache) -> None:
    prefixed = _alias(cache, KEY_PREFIX="pfx")
    v2 = _alias(cache, VERSION=2)
    await cache.aset("somekey", "value")
    assert await prefixed.ahas_key("somekey") is False
    await prefixed.aset("somekey", "value2")
    assert await cache.aget("somekey") == "value"
    assert await prefixed.aget("somekey") == "value2"
    assert await v2.aget("somekey") is None
    assert await cache.aget("somekey", version=1) == "value"
    await v2.aset("somekey", "v2 value")
    assert await cache.aget("somekey", version=2) == "v2 value"
    assert await cache.aincr_version("somekey") == 2
    assert await cache.aget("somekey", version=2) == "value"
    assert await cache.aget("somekey") is None
    assert await cache.adecr_version("somekey", version=2) == 1
    assert await cache.aget("somekey") == "value"
    with pytest.raises(ValueError):
        await cache.aincr_version("does_not_exist")


async def test_aget_many_aset_many_adelete_many(cache: ChordeCache) -> None:
    assert await cache.aset_many({"a": "a", "c": "c", "d": "d"}) == []
    assert await cache.aset_many({}) == []
    assert await cache.aget_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert await cache.aget_many(["a", "b", "e"]) == {"a": "a"}
    assert await cache.aget_many(iter(["a", "b"])) == {"a": "a"}
    assert await cache.aget_many([]) == {}
    await cache.adelete_many(["a", "c"])
    assert await cache.aget_many(["a", "c", "d"]) == {"d": "d"}
    await cache.adelete_many([])
    await cache.aset_many({"x": 1, "y": 2}, 0)
    assert await cache.aget_many(["x", "y"]) == {}


async def test_adelete(cache: ChordeCache) -> None:
    await cache.aset_many({"key1": "spam", "key2": "eggs"})
    assert await cache.adelete("key1") is True
    assert await cache.aget("key1") is None
    assert await cache.aget("key2") == "eggs"
    assert await cache.adelete("key1") is False


async def test_aincr_adecr(cache: ChordeCache) -> None:
    await cache.aset("answer", 41)
    assert await cache.aincr("answer") == 42
    assert await cache.aget("answer") == 42
    assert await cache.aincr("answer", 10) == 52
    assert await cache.aincr("answer", -10) == 42
    assert await cache.adecr("answer") == 41
    assert await cache.adecr("answer", 10) == 31
    assert await cache.adecr("answer", -10) == 41
    with pytest.raises(ValueError):
        await cache.aincr("does_not_exist")
    with pytest.raises(ValueError):
        await cache.adecr("does_not_exist")
    await cache.aset("null", None)
    with pytest.raises(TypeError):
        await cache.aincr("null")
    with pytest.raises(TypeError):
        await cache.adecr("null")


async def test_aincr_concurrent_tasks_are_atomic(cache: ChordeCache) -> None:
    await cache.aset("counter", 0)
    await asyncio.gather(*(cache.aincr("counter") for _ in range(60)))
    assert await cache.aget("counter") == 60


async def test_atouch_and_expiry(cache: ChordeCache) -> None:
    await cache.aset("expire1", "very quickly", timeout=0.2)
    assert await cache.atouch("expire1", timeout=30) is True
    await cache.aset("expire2", "very quickly", timeout=0.2)
    deadline = time.monotonic() + 5
    while await cache.ahas_key("expire2") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await cache.aget("expire2") is None
    assert await cache.ahas_key("expire1") is True
    assert await cache.atouch("expire2") is False  # expired: nothing to touch
    assert await cache.aadd("expire2", "new") is True
    assert await cache.atouch("missing") is False
    await cache.aset("forever", "v", timeout=1)
    assert await cache.atouch("forever", timeout=None) is True
    assert await cache.atouch("expire1", timeout=0) is True
    assert await cache.aget("expire1") is None


async def test_zero_and_forever_timeouts(cache: ChordeCache) -> None:
    await cache.aset("key1", "eggs", 0)
    assert await cache.aget("key1") is None
    await cache.aset_many({"key3": "sausage", "key4": "lobster bisque"}, 0)
    assert await cache.aget_many(["key3", "key4"]) == {}
    await cache.aset("key1", "eggs", None)
    assert await cache.aget("key1") == "eggs"
    assert await cache.aadd("key2", "ham", None) is True
    assert await cache.aadd("key1", "new eggs", None) is False
    await cache.aset("long", "value", 60 * 60 * 24 * 30 + 1)
    assert await cache.aget("long") == "value"
    await cache.aset("float", "spam", 100.2)
    assert await cache.aget("float") == "spam"


async def test_aclear_and_aclose(cache: ChordeCache) -> None:
    await cache.aset_many({"key1": "spam", "key2": "eggs"})
    await cache.aclear()
    assert await cache.aget_many(["key1", "key2"]) == {}
    await cache.aclose()
    await cache.aset("after-close", 1)
    assert await cache.aget("after-close") == 1


async def test_aget_or_set(cache: ChordeCache) -> None:
    assert await cache.aget("projector") is None
    assert await cache.aget_or_set("projector", 42) == 42
    assert await cache.aget("projector") == 42
    assert await cache.aget_or_set("null", None) is None
    assert await cache.aget("null", "default") is None
    assert await cache.aget_or_set("mykey", lambda: "value") == "value"
    assert await cache.aget_or_set("mykey", lambda: "other") == "value"
    assert await cache.aget_or_set("brian", 1979, version=2) == 1979
    assert await cache.aget("brian", version=1) is None


class _C:
    def m(self) -> int:
        return 24


async def test_data_types_and_copies(cache: ChordeCache) -> None:
    values = {
        "string": "this is a string",
        "int": 42,
        "bool": True,
        "list": [1, 2, 3, 4],
        "tuple": (1, 2, 3, 4),
        "dict": {"A": 1, "B": 2},
        "class": _C,
        "bytes": b"\x00\xff" * 100,
        "unicode": "ŠĐĆŽćžšđ",
    }
    for key, value in values.items():
        await cache.aset(key, value)
        assert await cache.aget(key) == value
    got = await cache.aget("list")
    got.append(5)
    assert await cache.aget("list") == [1, 2, 3, 4]


class _Unpicklable:
    def __getstate__(self) -> Any:
        raise pickle.PickleError()


async def test_unpicklable_raises(cache: ChordeCache) -> None:
    with pytest.raises(pickle.PickleError):
        await cache.aset("unpicklable", _Unpicklable())
    with pytest.raises(pickle.PickleError):
        await cache.aadd("unpicklable", _Unpicklable())


@pytest.mark.parametrize(
    ("operation", "args"),
    [
        ("aadd", ["KEY", 1]),
        ("aget", ["KEY"]),
        ("aset", ["KEY", 1]),
        ("atouch", ["KEY"]),
        ("adelete", ["KEY"]),
        ("ahas_key", ["KEY"]),
        ("aget_many", [["KEY", "b"]]),
        ("aset_many", [{"KEY": 1, "b": 2}]),
        ("adelete_many", [["KEY", "b"]]),
    ],
)
async def test_invalid_keys_warn(cache: ChordeCache, operation: str, args: list) -> None:
    key = "key with spaces and 清"
    args = [_subst(a, key) for a in args]
    cache.key_func = lambda k, *rest: k  # as Django's suite does, to see the raw key
    with pytest.warns(CacheKeyWarning, match="memcached"):
        await getattr(cache, operation)(*args)


def _subst(value: Any, key: str) -> Any:
    if value == "KEY":
        return key
    if isinstance(value, list):
        return [_subst(v, key) for v in value]
    if isinstance(value, dict):
        return {_subst(k, key): v for k, v in value.items()}
    return value


async def test_invalid_key_incr_warns(cache: ChordeCache) -> None:
    key = "a" * 251
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await cache.aset(key, 1)
        assert await cache.aincr(key) == 2
    assert any(issubclass(w.category, CacheKeyWarning) for w in caught)


async def test_async_methods_agree_with_sync_ones(cache: ChordeCache) -> None:
    cache.set("sync", [1])
    assert await cache.aget("sync") == [1]
    await cache.aset("async", {"a": 1})
    assert cache.get("async") == {"a": 1}
    cache.set("n", 1)
    assert await cache.aincr("n") == 2
    assert cache.incr("n") == 3


async def test_inproc_async_methods_run_inline() -> None:
    cache = ChordeCache(f"a-{uuid.uuid4().hex}", {"OPTIONS": {"CLIENT": "inproc"}})
    thread = threading.get_ident()
    cache.set("k", 1)
    # Driven by hand: a coroutine that never suspends finishes on its first send(),
    # so no executor (no thread hop) and no event-loop round trip was involved.
    for coro in (cache.aget("k"), cache.aset("k", 2), cache.aincr("k"), cache.aget_many(["k"])):
        with pytest.raises(StopIteration):
            coro.send(None)
    assert threading.get_ident() == thread
    assert cache.get("k") == 3


async def test_memcached_async_methods_do_not_block_the_loop(memcached: Any) -> None:
    cache = ChordeCache(memcached.address, {"OPTIONS": {"CLIENT_OPTIONS": {"timeout": 2.0}}})
    await cache.aset("k", "v")
    memcached.suspend()  # a hung server: calls wait for the client timeout
    try:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        assert await cache.aget("k", "miss") == "miss"
        task.cancel()
    finally:
        memcached.resume()
    assert ticks > 5  # the loop kept running while aget waited on the server
