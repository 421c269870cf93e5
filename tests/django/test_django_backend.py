"""ChordeCache beyond Django's own suite: stacks, sharing, atomicity, configuration errors."""

from __future__ import annotations

import math
import pickle
import threading
import time
import uuid
import warnings
from typing import Any

import pytest
from django.core import checks
from django.core.cache import CacheKeyWarning, caches
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from chorde.clients.memcached import MemcachedClient
from chorde_django import ChordeCache, cached, close_clients, derive_checksum_key, get_client
from chorde_django._config import DEFAULT_L1_TTL

BACKEND = "chorde_django.ChordeCache"


def _inproc(**options: Any) -> ChordeCache:
    # A LOCATION of its own: in-process stores are shared per LOCATION within the process.
    return ChordeCache(f"t-{uuid.uuid4().hex}", {"OPTIONS": {"CLIENT": "inproc", **options}})


def _memcached(address: str, stack: str = "memcached", **options: Any) -> ChordeCache:
    options.setdefault("NAMESPACE", f"t{uuid.uuid4().hex[:12]}")
    return ChordeCache(address, {"OPTIONS": {"CLIENT": stack, **options}})


@pytest.fixture(params=["inproc", "memcached", "tiered"])
def backend(request: pytest.FixtureRequest) -> ChordeCache:
    """A fresh ChordeCache on each stack."""
    if request.param == "inproc":
        return _inproc()
    server = request.getfixturevalue("memcached")
    return _memcached(server.address, request.param)


# ---- stacks and LOCATION ---------------------------------------------------------------


def test_location_picks_the_stack(memcached: Any) -> None:
    assert ChordeCache("", {}).stack == "inproc"
    assert ChordeCache(memcached.address, {}).stack == "memcached"
    both = f"{memcached.address};{memcached.address.replace('127.0.0.1', 'localhost')}"
    backend = ChordeCache(both, {"OPTIONS": {"NAMESPACE": "two"}})
    assert isinstance(backend.client, MemcachedClient)
    assert len(backend.client.servers) == 2
    listed = ChordeCache("", {"OPTIONS": {"CLIENT": "tiered", "SERVERS": [memcached.address]}})
    assert listed.stack == "tiered"
    listed.set("k", "v")
    assert listed.get("k") == "v"


def test_inproc_store_shared_per_location_like_locmem() -> None:
    name = f"shared-{uuid.uuid4().hex}"
    a = ChordeCache(name, {"OPTIONS": {"CLIENT": "inproc"}})
    b = ChordeCache(name, {"OPTIONS": {"CLIENT": "inproc"}, "KEY_PREFIX": ""})
    other = ChordeCache(name + "-other", {"OPTIONS": {"CLIENT": "inproc"}})
    a.set("value", 42)
    assert b.get("value") == 42
    assert other.get("value") is None
    assert a.client is b.client


def test_backends_of_one_alias_share_a_client_across_threads(memcached: Any) -> None:
    settings = {"default": {"BACKEND": BACKEND, "LOCATION": memcached.address}}
    seen: list[Any] = []
    with override_settings(CACHES=settings):
        seen.append(caches["default"].client)
        t = threading.Thread(target=lambda: seen.append(caches["default"].client))
        t.start()
        t.join(10)
    assert len(seen) == 2 and seen[0] is seen[1]


# ---- Django semantics ------------------------------------------------------------------


def test_timeouts(backend: ChordeCache) -> None:
    backend.set("forever", 1, None)
    assert backend.client.getTtl(backend.make_key("forever"))[1] == math.inf or (
        backend.stack == "tiered"  # L1 holds it at most L1_TTL
        and backend.client.getTtl(backend.make_key("forever"))[1] <= DEFAULT_L1_TTL
    )
    backend.set("zero", 1, 0)
    assert not backend.has_key("zero")
    backend.set("neg", 1, -5)
    assert not backend.has_key("neg")
    assert backend.add("zero", 2, 0) is True
    assert backend.get("zero") is None
    backend.set("short", "x", 0.2)
    assert backend.get("short") == "x"
    deadline = time.monotonic() + 5
    while backend.has_key("short") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.get("short", "gone") == "gone"
    assert backend.add("short", "y", 10) is True  # an expired entry does not block add
    assert backend.touch("missing") is False


def test_default_timeout_none_means_forever() -> None:
    backend = ChordeCache(
        f"t-{uuid.uuid4().hex}", {"TIMEOUT": None, "OPTIONS": {"CLIENT": "inproc"}}
    )
    backend.set("k", "v")
    assert backend.client.getTtl(backend.make_key("k"))[1] == math.inf


def test_values_are_copies_on_local_stacks(backend: ChordeCache) -> None:
    value = {"list": [1, 2]}
    backend.set("k", value)
    value["list"].append(3)
    got = backend.get("k")
    assert got == {"list": [1, 2]}
    got["list"].append(4)
    assert backend.get("k") == {"list": [1, 2]}
    assert backend.get_many(["k"]) == {"k": {"list": [1, 2]}}


class _Unpicklable:
    def __getstate__(self) -> Any:
        raise pickle.PickleError("no")


def test_unpicklable_raises_and_stores_nothing(backend: ChordeCache) -> None:
    for op in (backend.set, backend.add):
        with pytest.raises(pickle.PickleError):
            op("bad", _Unpicklable())
    with pytest.raises(pickle.PickleError):
        backend.set_many({"ok": 1, "bad": _Unpicklable()})
    assert not backend.has_key("bad")


def test_incr_decr_errors_like_locmem(backend: ChordeCache) -> None:
    with pytest.raises(ValueError, match="not found"):
        backend.incr("missing")
    with pytest.raises(ValueError, match="not found"):
        backend.decr("missing")
    backend.set("none", None)
    with pytest.raises(TypeError):
        backend.incr("none")
    backend.set("n", 5)
    assert backend.incr("n", 10) == 15
    assert backend.decr("n", 20) == -5
    assert backend.get("n") == -5
    backend.set("f", 1.5)
    assert backend.incr("f") == 2.5


def test_incr_keeps_the_expiry_inproc() -> None:
    backend = _inproc()
    backend.set("n", 1, 100)
    key = backend.make_key("n")
    before = backend.client.store.peek(key)[1]
    assert backend.incr("n") == 2
    assert abs(backend.client.store.peek(key)[1] - before) < 0.05  # the time it had left


def test_incr_is_atomic_across_threads(backend: ChordeCache) -> None:
    backend.set("counter", 0)
    per_thread, threads = 100, 8
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(per_thread):
                backend.incr("counter")
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not errors
    assert backend.get("counter") == per_thread * threads


def test_incr_is_atomic_across_processes_sharing_memcached(memcached: Any) -> None:
    # Two clients (as two processes would have) racing on one counter.
    namespace = f"t{uuid.uuid4().hex[:12]}"
    a = _memcached(memcached.address, NAMESPACE=namespace, CLIENT_OPTIONS={"timeout": 5.0})
    b = _memcached(memcached.address, NAMESPACE=namespace, CLIENT_OPTIONS={"timeout": 4.0})
    assert a.client is not b.client
    a.set("c", 0)

    def work(backend: ChordeCache) -> None:
        for _ in range(150):
            backend.incr("c")

    pool = [threading.Thread(target=work, args=(x,)) for x in (a, b, a, b)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert b.get("c") == 600


def test_delete_reports_whether_it_existed(backend: ChordeCache) -> None:
    backend.set("k", 1)
    assert backend.delete("k") is True
    assert backend.delete("k") is False
    backend.set_many({"a": 1, "b": 2, "c": 3})
    backend.delete_many(["a", "b", "zz"])
    assert backend.get_many(["a", "b", "c"]) == {"c": 3}


def test_versions_and_prefixes_do_not_collide(backend: ChordeCache) -> None:
    backend.set("k", "v1")
    backend.set("k", "v2", version=2)
    assert backend.get("k") == "v1"
    assert backend.get("k", version=2) == "v2"
    assert backend.incr_version("k") == 2
    assert backend.get("k", version=2) == "v1"
    assert backend.get("k") is None


def test_clear_is_scoped_to_the_store_or_namespace(memcached: Any) -> None:
    a = _memcached(memcached.address, NAMESPACE="ns-a")
    b = _memcached(memcached.address, NAMESPACE="ns-b")
    a.set("k", "a")
    b.set("k", "b")
    a.clear()
    assert a.get("k") is None
    assert b.get("k") == "b"


def test_memcached_odd_keys_warn_but_work(memcached: Any) -> None:
    backend = _memcached(memcached.address)
    key = "key with spaces and 清 " + "x" * 300
    with pytest.warns(CacheKeyWarning):
        backend.set(key, "value")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        assert backend.get(key) == "value"


def test_set_many_returns_keys_that_failed(memcached: Any) -> None:
    backend = _memcached(memcached.address, CLIENT_OPTIONS={"retry_interval": 0.0})
    assert backend.set_many({"a": 1, "b": 2}) == []
    memcached.stop()
    assert sorted(backend.set_many({"a": 1, "b": 2})) == ["a", "b"]
    assert backend.get("a", "miss") == "miss"  # a down server is a miss, not an error


# ---- tiered ----------------------------------------------------------------------------


def test_tiered_l1_ttl_bounds_staleness(memcached: Any) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    tiered = _memcached(memcached.address, "tiered", NAMESPACE=namespace, L1_TTL=0.3)
    other = _memcached(memcached.address, NAMESPACE=namespace, CLIENT_OPTIONS={"timeout": 2.0})
    tiered.set("k", "old")
    assert tiered.get("k") == "old"
    other.set("k", "new")  # another process writes to memcached
    assert tiered.get("k") == "old"  # served by L1...
    deadline = time.monotonic() + 5
    while tiered.get("k") != "new" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tiered.get("k") == "new"  # ...for at most L1_TTL


def test_tiered_hits_survive_memcached_going_down(memcached: Any) -> None:
    tiered = _memcached(memcached.address, "tiered", CLIENT_OPTIONS={"retry_interval": 60.0})
    tiered.set("k", "v")
    memcached.stop()
    assert tiered.get("k") == "v"


# ---- checksum key ----------------------------------------------------------------------


def test_checksum_key_derived_from_secret_key_with_rotation(memcached: Any) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    params = {"OPTIONS": {"NAMESPACE": namespace}}
    with override_settings(SECRET_KEY="old-secret-" + "o" * 40):
        old = ChordeCache(memcached.address, params)
        old.set("k", "signed with old")
    with override_settings(SECRET_KEY="new-secret-" + "n" * 40, SECRET_KEY_FALLBACKS=[]):
        strict = ChordeCache(memcached.address, params)
        assert strict.get("k") is None  # another secret: the value does not verify
    with override_settings(
        SECRET_KEY="new-secret-" + "n" * 40, SECRET_KEY_FALLBACKS=["old-secret-" + "o" * 40]
    ):
        rotated = ChordeCache(memcached.address, params)
        assert rotated.get("k") == "signed with old"
    key = derive_checksum_key("s" * 50)
    assert len(key) == 32 and b"s" * 50 not in key and key != derive_checksum_key("t" * 50)


def test_explicit_checksum_key(memcached: Any) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    a = _memcached(memcached.address, NAMESPACE=namespace, CHECKSUM_KEY="one")
    b = _memcached(memcached.address, NAMESPACE=namespace, CHECKSUM_KEY=["two", "one"])
    c = _memcached(memcached.address, NAMESPACE=namespace, CHECKSUM_KEY="three")
    a.set("k", "v")
    assert b.get("k") == "v"
    assert c.get("k") is None


def test_missing_secret_key_is_a_configuration_error(memcached: Any) -> None:
    with (
        override_settings(SECRET_KEY=""),
        pytest.raises(ImproperlyConfigured, match=r"CHECKSUM_KEY.*SECRET_KEY"),
    ):
        ChordeCache(memcached.address, {})


# ---- configuration errors --------------------------------------------------------------


BAD = [
    ("", {"CLIENT": "redis"}, "OPTIONS['CLIENT']"),
    ("", {"SIZE": 0}, "OPTIONS['SIZE']"),
    ("", {"SIZE": "big"}, "OPTIONS['SIZE']"),
    ("", {"SIZE": 5, "MAX_ENTRIES": 5}, "OPTIONS['MAX_ENTRIES']"),
    ("", {"STORE": "fifo"}, "OPTIONS['STORE']"),
    ("", {"CULL_FREQUENCY": 3}, "OPTIONS['CULL_FREQUENCY']"),
    ("", {"NAMESPACE": "x"}, "OPTIONS['NAMESPACE']"),
    ("127.0.0.1:11211", {"SIZE": 5}, "OPTIONS['SIZE']"),
    ("127.0.0.1:notaport", {}, "LOCATION"),
    ("", {"CLIENT": "memcached"}, "LOCATION"),
    ("127.0.0.1:1", {"SERVERS": ["127.0.0.1:2"]}, "OPTIONS['SERVERS']"),
    ("", {"CLIENT": "memcached", "SERVERS": [11211]}, "OPTIONS['SERVERS']"),
    ("127.0.0.1:1", {"NAMESPACE": 5}, "OPTIONS['NAMESPACE']"),
    ("127.0.0.1:1", {"CHECKSUM_KEY": ""}, "OPTIONS['CHECKSUM_KEY']"),
    ("127.0.0.1:1", {"CHECKSUM_KEY": [1]}, "OPTIONS['CHECKSUM_KEY']"),
    ("127.0.0.1:1", {"CLIENT_OPTIONS": {"tiemout": 1}}, "OPTIONS['CLIENT_OPTIONS']['tiemout']"),
    (
        "127.0.0.1:1",
        {"CLIENT_OPTIONS": {"namespace": "x"}},
        "OPTIONS['CLIENT_OPTIONS']['namespace']",
    ),
    ("127.0.0.1:1", {"CLIENT_OPTIONS": []}, "OPTIONS['CLIENT_OPTIONS']"),
    ("127.0.0.1:1", {"CLIENT": "tiered", "L1_TTL": 0}, "OPTIONS['L1_TTL']"),
    ("127.0.0.1:1", {"CLIENT": "tiered", "L1_SIZE": -1}, "OPTIONS['L1_SIZE']"),
    ("", {"CLIENT": "files"}, "LOCATION"),
    ("", {"CLIENT": "elasticache"}, "LOCATION"),
]


@pytest.mark.parametrize(("location", "options", "named"), BAD)
def test_bad_options_raise_naming_the_option(location: str, options: dict, named: str) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        ChordeCache(location, {"OPTIONS": options})
    assert named in str(info.value)


def test_bad_timeout_and_rejected_client_options() -> None:
    with pytest.raises(ImproperlyConfigured, match="TIMEOUT"):
        ChordeCache("", {"TIMEOUT": "soon"})
    # Passed on by name, rejected by the client's own validation: still named.
    with pytest.raises(ImproperlyConfigured, match="timeout"):
        ChordeCache("127.0.0.1:1", {"OPTIONS": {"CLIENT_OPTIONS": {"timeout": -1}}})


def test_system_check_names_the_option() -> None:
    bad = {
        "default": {"BACKEND": BACKEND},
        "typo": {"BACKEND": BACKEND, "OPTIONS": {"SIZ": 10}},
        "servers": {"BACKEND": BACKEND, "LOCATION": "127.0.0.1:x"},
        "a": {"BACKEND": BACKEND, "LOCATION": "same", "OPTIONS": {"CLIENT": "inproc"}},
        "b": {
            "BACKEND": BACKEND,
            "LOCATION": "same",
            "OPTIONS": {"CLIENT": "inproc", "SIZE": 7},
        },
    }
    with override_settings(CACHES=bad):
        messages = checks.run_checks(tags=[checks.Tags.caches])
        # Django's own cache checks build every alias: the bad one must not crash them.
        with pytest.raises(ImproperlyConfigured, match=r"OPTIONS\['SIZ'\]"):
            caches["typo"].get("k")
    by_id: dict[str, list[str]] = {}
    for m in messages:
        by_id.setdefault(m.id, []).append(m.msg)
    errors = by_id.get("chorde_django.E001", [])
    assert len(errors) == 2
    assert any("CACHES['typo'] OPTIONS['SIZ']" in e for e in errors)
    assert any("CACHES['servers'] LOCATION" in e for e in errors)
    assert len(by_id.get("chorde_django.W001", [])) == 1
    with override_settings(CACHES={"default": {"BACKEND": BACKEND}}):
        assert not checks.run_checks(tags=[checks.Tags.caches])


# ---- the chorde client, @cached --------------------------------------------------------


def test_cached_helper_and_get_client(memcached: Any) -> None:
    settings = {
        "default": {"BACKEND": BACKEND},
        "mc": {"BACKEND": BACKEND, "LOCATION": memcached.address, "KEY_PREFIX": "site1"},
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    calls: list[int] = []
    with override_settings(CACHES=settings):
        assert get_client() is caches["default"].client
        with pytest.raises(TypeError, match=r"not a chorde_django\.ChordeCache"):
            get_client("locmem")

        @cached(60, alias="mc")
        def square(x: int) -> int:
            calls.append(x)
            return x * x

        assert square(3) == 9
        assert square(3) == 9
        assert calls == [3]
        assert square.client is caches["mc"].client
        square.invalidate(3)
        assert square(3) == 9
        assert calls == [3, 3]
        # The namespace carries KEY_PREFIX and VERSION.
        key = (f"site1:1:{square.__module__}.{square.__qualname__}", 3)
        # Stamped with the function's revision (chorde.tags: invalidate_all across processes).
        assert caches["mc"].client.get(key).value == 9


def test_close_keeps_the_shared_client_usable_close_clients_closes(memcached: Any) -> None:
    backend = _memcached(memcached.address)
    backend.set("k", 1)
    backend.close()
    assert backend.get("k") == 1
    close_clients()
    assert _memcached(memcached.address, NAMESPACE="other").client is not backend.client


def test_lru_eviction_by_size() -> None:
    backend = _inproc(SIZE=9)
    for key in range(9):
        backend.set(key, key, timeout=None)
    for key in range(6):
        assert backend.get(key) == key
    backend.set(9, 9, timeout=None)
    assert [backend.get(k) for k in range(10)] == [0, 1, 2, 3, 4, 5, None, 7, 8, 9]
    backend.incr(7)  # incr counts as a use too
    backend.set(10, 10)
    backend.set(11, 11)
    assert backend.get(7) == 8
    cuckoo = _inproc(MAX_ENTRIES=50, STORE="cuckoo")
    cuckoo.set_many({k: k for k in range(200)})
    assert cuckoo.client.usage <= 50


def test_key_warnings_match_djangos_own() -> None:
    from django.core.cache.backends.base import memcache_key_warnings

    backend = ChordeCache("", {"KEY_PREFIX": "p"})
    for key in ("with space", "tab\there", "a" * 250, "ok-key", "清"):
        made = f"p:1:{key}"
        expected = list(memcache_key_warnings(made))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert backend.make_and_validate_key(key) == made
            backend.set(key, 1)
        assert [str(w.message) for w in caught] == expected * 2
        assert all(w.category is CacheKeyWarning for w in caught)

    class Liberal(ChordeCache):
        def validate_key(self, key: str) -> None:
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Liberal("", {}).set("some key with spaces" * 15, "v")
    custom = ChordeCache("", {"KEY_FUNCTION": lambda k, p, v: f"custom-{v}-{k}"})
    assert custom.make_and_validate_key("k", version=3) == "custom-3-k"


# ---- files and ElastiCache stacks ------------------------------------------------------


def test_files_stack(tmp_path: Any) -> None:
    backend = ChordeCache(str(tmp_path), {"OPTIONS": {"CLIENT": "files", "SIZE": 10_000_000}})
    assert backend.stack == "files"
    backend.set("a", {"x": [1]})
    assert backend.get("a") == {"x": [1]}
    assert backend.add("a", 2) is False
    assert backend.set_many({"n": 1, "b": b"raw"}) == []
    assert backend.incr("n", 4) == 5
    assert backend.get_many(["a", "n", "b", "zz"]) == {"a": {"x": [1]}, "n": 5, "b": b"raw"}
    assert backend.touch("n", 60) is True
    assert backend.delete("n") is True
    with pytest.raises(ValueError):
        backend.incr("n")
    # Another process (another client on the same directory) sees the entries.
    other = ChordeCache(str(tmp_path), {"OPTIONS": {"CLIENT": "files", "SIZE": 9_999_999}})
    assert other.client is not backend.client
    assert other.get("a") == {"x": [1]}
    backend.clear()
    assert other.get("a") is None


def test_elasticache_stack(memcached_factory: Any) -> None:
    from tests.servers import ConfigEndpoint

    nodes = memcached_factory(2)
    endpoint = ConfigEndpoint()
    try:
        endpoint.publish(nodes)
        backend = ChordeCache(
            endpoint.address,
            {"OPTIONS": {"CLIENT": "elasticache", "CLIENT_OPTIONS": {"poll_interval": 30.0}}},
        )
        assert backend.stack == "elasticache"
        assert sorted(backend.client.servers) == sorted(n.address for n in nodes)
        backend.set_many({f"k{i}": i for i in range(20)})
        assert backend.get_many([f"k{i}" for i in range(20)]) == {f"k{i}": i for i in range(20)}
        assert backend.incr("k3", 10) == 13
        assert all(int(n.stats()["curr_items"]) > 0 for n in nodes)  # spread over the nodes
    finally:
        endpoint.close()
    with pytest.raises(ImproperlyConfigured, match=r"CLIENT_OPTIONS'\]\['pol_interval'\]"):
        ChordeCache(
            "127.0.0.1:1",
            {"OPTIONS": {"CLIENT": "elasticache", "CLIENT_OPTIONS": {"pol_interval": 1}}},
        )
