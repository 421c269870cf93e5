"""chorde 1.x code meets every name it used: the ones whose meaning carried over work as
1.x documented them, the rest fail with an error naming what replaced them.

Each row of docs/migrating.md's tables is either exercised here or by the test named in it.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import math
import warnings

import pytest

import chorde
from chorde import _legacy
from chorde.clients.inproc import Cache, CuckooCache, InprocCacheClient
from chorde.errors import RemovedNameError

SECRET = "legacy-test-secret"


# ---- names that resolve -------------------------------------------------------------------


def test_timeout_and_cancelled_errors_are_what_futures_raise():
    assert chorde.TimeoutError is concurrent.futures.TimeoutError
    assert chorde.CancelledError is concurrent.futures.CancelledError
    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    with pytest.raises(chorde.TimeoutError):
        future.result(timeout=0.001)
    future.cancel()
    with pytest.raises(chorde.CancelledError):
        future.result()
    from chorde.clients.base import CancelledError, TimeoutError  # 1.x's home of both

    assert (TimeoutError, CancelledError) == (chorde.TimeoutError, chorde.CancelledError)


def test_base_names_of_1x():
    from chorde.clients.base import (
        FOREVER,
        NONE,
        CacheMissError,
        NamespaceWrapper,
        ReadWriteSyncAdapter,
        SyncAdapter,
    )
    from chorde.clients.namespace import NamespaceWrapper as Current

    assert NamespaceWrapper is Current
    assert CacheMissError is chorde.CacheMissError and NONE is chorde.NONE
    client = InprocCacheClient(10)
    client.put("k", 1, FOREVER)  # 1.x's "never expires"
    assert FOREVER == math.inf and client.getTtl("k")[1] == math.inf
    # 1.x's lock adapters: every client is thread-safe, so the client itself
    assert SyncAdapter(client) is client and ReadWriteSyncAdapter(client) is client


def test_inproc_store_class_args_and_kwargs():
    cuckoo = InprocCacheClient(100, store_class=CuckooCache)
    assert type(cuckoo.store) is CuckooCache and cuckoo.capacity == 100
    lru = InprocCacheClient(100, store_class=Cache, store_kwargs={"touch_on_read": False})
    lru.put(1, "a", 60)
    assert lru.get(1) == "a" and lru.store.capacity == 100
    positional = InprocCacheClient(50, CuckooCache)  # 1.x's second positional argument
    assert type(positional.store) is CuckooCache
    with pytest.raises(TypeError, match="store_class"):
        InprocCacheClient(10, store_args=(1,))
    with pytest.raises(TypeError, match="both store= and"):
        InprocCacheClient(10, "lru", store_class=CuckooCache)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sizes'"):
        InprocCacheClient(10, sizes=3)


def _unresolved(monkeypatch, module, name):
    # An alias is resolved (and warned about) once, then kept on its module.
    monkeypatch.delattr(importlib.import_module(module), name, raising=False)


def test_fast_memcached_and_elasticache_are_the_clients_with_a_warning(monkeypatch):
    from chorde.clients.elasticache import ElastiCacheClient
    from chorde.clients.memcached import MemcachedClient

    _unresolved(monkeypatch, "chorde.clients.memcached", "FastMemcachedClient")
    _unresolved(monkeypatch, "chorde.clients.elasticache", "FastElastiCacheClient")

    with pytest.warns(DeprecationWarning, match="FastMemcachedClient is MemcachedClient"):
        from chorde.clients.memcached import FastMemcachedClient
    with pytest.warns(DeprecationWarning, match="FastElastiCacheClient is ElastiCacheClient"):
        from chorde.clients.elasticache import FastElastiCacheClient
    assert FastMemcachedClient is MemcachedClient
    assert FastElastiCacheClient is ElastiCacheClient


@pytest.mark.parametrize("package", ["chorde", "chorde.clients"])
@pytest.mark.parametrize("name", sorted(_legacy._REEXPORTED))
def test_1x_star_exports_resolve_with_a_warning(monkeypatch, package, name):
    _unresolved(monkeypatch, package, name)
    home = _legacy._REEXPORTED[name]
    with pytest.warns(DeprecationWarning, match=f"import {name} from {home}"):
        value = getattr(importlib.import_module(package), name)
    assert value is getattr(importlib.import_module(home), name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once resolved, no more warnings
        assert getattr(importlib.import_module(package), name) is value


def test_1x_lru_cache_is_the_exact_lru_store(monkeypatch):
    _unresolved(monkeypatch, "chorde", "LRUCache")
    with pytest.warns(DeprecationWarning, match="import Cache from chorde.clients.inproc"):
        from chorde import LRUCache
    assert LRUCache is Cache


def test_memcached_options_of_1x_mapped_or_refused(memcached):
    from chorde.clients.memcached import MemcachedClient

    with pytest.warns(DeprecationWarning, match="socket_timeout=...\\) is spelled timeout="):
        c = MemcachedClient(
            [memcached.address],
            checksum_key=SECRET,
            socket_timeout=0.7,
            dead_retry=2.0,
            max_backing_value_length=64 * 1024,
        )
    try:
        assert (c.timeout, c.retry_interval) == (0.7, 2.0)
        big = "x" * 200_000  # over the 64 KiB items: paged, read back whole
        c.put("big", big, 60)
        assert c.get("big") == big
    finally:
        c.close()
    for option, replacement in [
        ("failfast_size", "TieredInclusiveClient"),
        ("pickler", "Serializer"),
        ("encoding_cache", "chorde.keys"),
        ("client_class", "memcached protocol itself"),
        ("max_backing_key_length", "digested"),
    ]:
        with pytest.raises(TypeError, match=f"no option '{option}'.*{replacement}"):
            MemcachedClient([memcached.address], checksum_key=SECRET, **{option: 1})
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        MemcachedClient([memcached.address], checksum_key=SECRET, nonsense=1)


def test_elasticache_takes_1x_list_of_one_endpoint():
    from chorde.clients.elasticache import ElastiCacheClient
    from chorde.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="one client per cluster"):
        ElastiCacheClient(["a:11211", "b:11211"], checksum_key=SECRET)
    c = ElastiCacheClient(["127.0.0.1:1"], checksum_key=SECRET, timeout=0.2)
    try:
        assert c.config_endpoint == ElastiCacheClient("127.0.0.1:1", SECRET).config_endpoint
    finally:
        c.close()


def test_files_client_1x_argument_order_and_options(tmp_path):
    from chorde.clients.files import FilesCacheClient

    with pytest.warns(DeprecationWarning, match=r"FilesCacheClient\(size, basepath\)"):
        c = FilesCacheClient(1 << 20, str(tmp_path), checksum_key=SECRET, filemode=0o640)
    try:
        c.put("k", "v", 60)
        assert c.get("k") == "v" and c.capacity == 1 << 20
        assert c._config["path"] == str(tmp_path) and c._config["file_mode"] == 0o640
    finally:
        c.close()
    for option in ("sync_purge", "mmap_raw", "counter_slots", "value_pickler", "dirmode"):
        with pytest.raises(TypeError, match=f"no option '{option}'"):
            FilesCacheClient(str(tmp_path), 1 << 20, SECRET, **{option: 1})


# ---- names that are gone ------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(_legacy.MODULES))
def test_removed_modules_name_their_replacement(module):
    with pytest.raises(RemovedNameError, match=f"{module} is gone .*: "):
        importlib.import_module(module)


@pytest.mark.parametrize(
    "module, name",
    sorted((module, name) for module, names in _legacy.GONE.items() for name in names),
)
def test_removed_names_name_their_replacement(module, name):
    mod = importlib.import_module(module)
    with pytest.raises(RemovedNameError, match=f"{module}.{name} is gone .*: "):
        getattr(mod, name)
    with pytest.raises(ImportError, match="is gone"):  # from ... import shows it too
        exec(f"from {module} import {name}", {})


def test_unknown_names_stay_attribute_errors():
    import chorde.clients.base
    import chorde.decorators

    for module in (chorde.clients.base, chorde.decorators):
        assert not hasattr(module, "no_such_name")
        with pytest.raises(AttributeError, match="no_such_name"):
            module.no_such_name  # noqa: B018


def test_tiered_reads_take_1x_ttl_skip_and_promote_callback():
    import asyncio

    from chorde.clients.tiered import TieredInclusiveClient

    l1, l2 = InprocCacheClient(10), InprocCacheClient(10)
    tiered = TieredInclusiveClient(l1, l2)
    l1.put("k", "old", 5)  # about to expire up here...
    l2.put("k", "new", 100)  # ...fresher below
    promoted = []

    def told(*event):
        promoted.append(event)

    assert tiered.get("k") == "old"  # plain read: the first live entry
    assert tiered.getTtl("k", ttl_skip=10, promote_callback=told)[0] == "new"
    assert [(k, v) for k, v, _ in promoted] == [("k", "new")] and promoted[0][2] > 90
    assert l1.get("k") == "new"  # promoted
    l1.put("a", 1, 5)
    l2.put("a", 2, 100)
    l1.put("b", 3, 5)  # nothing fresher below: a miss for getMulti, itself for getTtlMulti
    assert dict(tiered.getMulti(["a", "b"], None, ttl_skip=10)) == {"a": 2, "b": None}
    assert dict(tiered.getTtlMulti(["b"], None, ttl_skip=10))["b"][0] == 3
    l1.put("c", "old", 5)
    l2.put("c", "new", 100)
    del promoted[:]

    async def awaited():
        got = await tiered.agetMulti(["c"], None, ttl_skip=10, promote_callback=told)
        return got, await tiered.aget("c", ttl_skip=10)

    assert asyncio.run(awaited()) == ([("c", "new")], "new")
    assert [(k, v) for k, v, _ in promoted] == [("c", "new")]


def test_tiered_ttl_fractions_refused():
    from chorde.clients.tiered import TieredInclusiveClient

    with pytest.raises(TypeError, match=r"ttl_fractions.*CappedTtlClient"):
        TieredInclusiveClient(InprocCacheClient(10), InprocCacheClient(10), ttl_fractions=(1, 2))


def test_namespace_wrapper_revmark_ttl_refused():
    from chorde.clients.namespace import NamespaceWrapper

    with pytest.raises(TypeError, match=r"revmark_ttl.*revision_refresh"):
        NamespaceWrapper("ns", InprocCacheClient(10), revmark_ttl=60)


# ---- @cached ------------------------------------------------------------------------------


@pytest.mark.parametrize("option", sorted(_legacy.REFUSED["cached"]))
def test_cached_options_of_1x_name_their_replacement(option):
    from chorde.decorators import cached

    replacement = _legacy.REFUSED["cached"][option]
    with pytest.raises(TypeError, match=f"no option '{option}'") as raised:
        cached(InprocCacheClient(10), 60, **{option: 1})
    assert replacement in str(raised.value)


def test_cached_functions_on_value_and_on_promote_name_their_replacement():
    from chorde.decorators import cached

    @cached(InprocCacheClient(10), 60)
    def f(x):
        return x

    for attr in ("on_value", "on_promote"):
        with pytest.raises(RemovedNameError, match=f"{attr} is gone"):
            getattr(f, attr)(print)


def test_async_ttl_not_below_ttl_refreshes_every_hit():
    # 1.x took async_ttl >= ttl: every hit is in the refresh window
    from chorde.decorators import cached

    calls = []
    done = concurrent.futures.ThreadPoolExecutor(1)

    @cached(InprocCacheClient(10), 60, async_ttl=120, executor=done)
    def f(x):
        calls.append(x)
        return len(calls)

    try:
        assert f(1) == 1
        for expected in (2, 3):
            assert f(1) == expected - 1  # served at once...
            done.submit(lambda: None).result()  # (the refresh it started is done)
            assert calls == [1] * expected  # ...and refreshed behind it
    finally:
        done.shutdown()


def test_no_warning_for_current_spellings(tmp_path):
    from chorde.clients.files import FilesCacheClient

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FilesCacheClient(str(tmp_path), 1 << 20, SECRET).close()
        InprocCacheClient(10, "cuckoo")
