"""MemcachedClient against real memcached processes (the contract suite covers the basics)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import pickle
import threading
import time
import warnings

import pytest
from pymemcache.client.base import Client as RawClient

from chorde import CacheMissError, ConfigurationError
from chorde.clients._pages import PageManifest
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.memcached import MemcachedClient, blocking, parse_server, protocol
from chorde.clients.memcached import client as client_module
from chorde.clients.tiered import TieredInclusiveClient
from chorde.keys import encode_key, memcache_key
from chorde.serialization import Serializer
from tests.clients.conftest import SECRET

TTL = 300
MB = 1024 * 1024


_raw_clients: list[RawClient] = []


@pytest.fixture(autouse=True)
def _close_raw_clients():
    yield
    while _raw_clients:
        _raw_clients.pop().close()


def raw(server) -> RawClient:
    """A raw pymemcache client on ``server``, closed at the end of the test."""
    r = RawClient((server.host, server.port), connect_timeout=2, timeout=5, default_noreply=False)
    _raw_clients.append(r)
    return r


def mkey(key, namespace="") -> bytes:
    return memcache_key(key, namespace)[0].encode()


def codec(client: MemcachedClient, key):
    """The serializer ``client`` verifies ``key``'s value with (bound to its generation)."""
    return client._locate(key)[2].state[2]


def page_keys(client: MemcachedClient, server, key) -> list[bytes]:
    """The memcached keys of the pages of the paged value under ``key``."""
    item = raw(server).get(mkey(key))
    manifest, _ = codec(client, key).loads(item[8:], key=encode_key(key))
    assert isinstance(manifest, PageManifest)
    return manifest.page_keys(client._internal_prefix)


def server_ttl(server, key: bytes) -> int:
    """Remaining server-side ttl of ``key`` (meta get ``t`` flag), -1 for never."""
    reply = raw(server).raw_command(b"mg " + key + b" t")
    assert reply.startswith(b"HD"), reply
    return int(reply.split(b" t")[1].split()[0])


# ---- the README examples -------------------------------------------------------------


def test_readme_example(memcached):
    c = MemcachedClient([f"localhost:{memcached.port}"], checksum_key="testing")
    c.put(3, 10, 300)
    assert 10 == c.get(3)
    with pytest.raises(CacheMissError):
        c.get(5)
    c.put(4, 20, 300)
    assert {3: 10, 4: 20, 5: None} == dict(c.getMulti([3, 4, 5], None))
    c.close()


def test_readme_tiered_example(memcached):
    l1 = InprocCacheClient(10)
    l2 = MemcachedClient([memcached.address], checksum_key="test")
    c = TieredInclusiveClient(l1, l2)
    c.put(3, 10, 300)
    assert 10 == c.get(3)
    with pytest.raises(CacheMissError):
        c.get(5)
    c.close()


# ---- configuration -------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", b"", []])
def test_checksum_key_is_required_and_says_why(memcached, key):
    with pytest.raises(ValueError, match=r"checksum_key.*unpickl.*execute code"):
        MemcachedClient([memcached.address], checksum_key=key)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("h:1", ("h", 1)),
        ("h", ("h", 11211)),
        ("[::1]:5", ("::1", 5)),
        ("[::1]", ("::1", 11211)),
        (("h", 2), ("h", 2)),
    ],
)
def test_parse_server(spec, expected):
    assert parse_server(spec) == expected


@pytest.mark.parametrize("spec", ["h:x", "h:0", ":11211", ("h",), 5, "[::1]x"])
def test_bad_server_spec_is_named(spec):
    with pytest.raises(ConfigurationError, match="server"):
        MemcachedClient([spec], checksum_key=SECRET)


@pytest.mark.parametrize(
    "option, value",
    [
        ("timeout", -1),
        ("connect_timeout", "1"),
        ("retry_interval", float("nan")),
        ("max_item_size", 100),
        ("namespace", "has space"),
        ("namespace", 3),
    ],
)
def test_bad_option_is_named(memcached, option, value):
    with pytest.raises((TypeError, ValueError), match=option):
        MemcachedClient([memcached.address], checksum_key=SECRET, **{option: value})


def test_no_servers():
    with pytest.raises(ConfigurationError, match="at least one"):
        MemcachedClient([], checksum_key=SECRET)


# ---- keys ----------------------------------------------------------------------------

AWKWARD_KEYS = [
    "x" * 300,
    "with space",
    "ctl\x01\n",
    "ünïcödé",
    ("tuple", 1, None),
    b"\x00\xff",
    frozenset({"a", 2}),
]


@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=lambda k: repr(k)[:20])
def test_awkward_keys_map_to_safe_memcached_keys(client, memcached, key):
    client.put(key, ("value", key), TTL)
    assert client.get(key) == ("value", key)
    stored = mkey(key).decode()
    assert raw(memcached).get(stored) is not None
    assert len(stored) <= 250 and stored.isascii() and stored.isprintable() and " " not in stored


def test_memoized_str_keys_never_stand_for_equal_keys_of_other_types(client, monkeypatch):
    # 1, 1.0 and True hash alike (and StrEnum members equal their str): only exact str keys
    # may come from the memo of mapped keys, and the memo stays bounded.
    import enum

    class Color(enum.StrEnum):
        RED = "1"

    monkeypatch.setattr(client_module, "_KEY_MEMO_SIZE", 8)
    keys = ["1", 1, 1.0, True, Color.RED, b"1", ("1",)]
    for i, key in enumerate(keys):
        client.put(key, i, TTL)
    # The StrEnum member is the same key as its str (same encoding): it overwrote "1".
    assert [client.get(k) for k in keys] == [4, 1, 2, 3, 4, 5, 6]
    assert dict(client.getMulti(keys)) == {"1": 4, 1: 3, b"1": 5, ("1",): 6}
    for i in range(50):
        client.put(f"k{i}", i, TTL)
        assert client.get(f"k{i}") == i
        assert len(client._key_memo) <= 8
    assert [client.get(f"k{i}") for i in range(50)] == list(range(50))


def test_equal_tuple_keys_of_other_types_stay_apart(client):
    # ("k", 1), ("k", 1.0) and ("k", True) are equal (one dict key) but encode apart; tuples
    # of str (the HTTP cache's keys, remembered once mapped) and their str-subclass twins
    # encode alike.
    keys = [("k", 1), ("k", 1.0), ("k", True), ("k", "1"), ("k", ("1",)), ("k", (1,))]
    for _ in range(2):  # (the second round maps from the memo)
        for i, key in enumerate(keys):
            client.put(key, i, TTL)
        assert [client.get(key) for key in keys] == list(range(len(keys)))
    assert ("k", "1") in client._key_memo and ("k", 1) not in client._key_memo

    class Name(str):
        pass

    assert client.get(("k", Name("1"))) == 3
    assert dict(client.getMulti([("k", 1.0), ("k", "1")])) == {("k", 1.0): 1, ("k", "1"): 3}


def test_digest_collision_is_a_miss(client, memcached):
    # Pretend "b"'s digest key collides with "a"'s: copy a's stored item under b's key.
    client.put("a", "value of a", TTL)
    r = raw(memcached)
    r.set(mkey("b"), r.get(mkey("a")), expire=60)
    assert client.get("b", "miss") == "miss"
    assert client.stats.errors == 1


# ---- signed values -------------------------------------------------------------------

UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(True)
    return "evil"


class _Evil:
    def __reduce__(self):
        return (_record_unpickling, ())


def test_tampered_bytes_are_a_miss_and_never_unpickled(client, memcached, caplog):
    UNPICKLED.clear()
    evil = pickle.dumps(_Evil())
    client.put("k", "genuine", TTL)
    r = raw(memcached)
    genuine = r.get(mkey("k"))
    gen = genuine[:8]
    flipped = bytearray(genuine)
    flipped[-40] ^= 1
    other_key_signed = gen + Serializer("another secret").dumps(_Evil(), key=b"sk")
    forged = [bytes(flipped), gen + evil, evil, gen + genuine[8:-1], other_key_signed, b""]
    caplog.set_level(logging.WARNING, "chorde.clients.memcached")
    for i, payload in enumerate(forged):
        r.set(mkey("k"), payload, expire=60)
        assert client.get("k", "miss") == "miss", i
        assert client.getTtl("k", "miss") == ("miss", -1.0)
    assert not UNPICKLED
    assert client.stats.errors >= len(forged) - 1  # a too-short item is a mere miss
    assert any("invalid memcached payload" in r.getMessage() for r in caplog.records)


def test_values_signed_with_another_key_are_misses(memcached):
    a = MemcachedClient([memcached.address], checksum_key="one")
    b = MemcachedClient([memcached.address], checksum_key="two")
    rotated = MemcachedClient([memcached.address], checksum_key=["two", "one"])
    a.put("k", 1, TTL)
    assert b.get("k", None) is None
    assert rotated.get("k") == 1  # key rotation: accept any configured key
    for c in (a, b, rotated):
        c.close()


# ---- expiry bookkeeping --------------------------------------------------------------


def test_server_expiry_keeps_stale_entries_for_the_grace(memcached):
    c = MemcachedClient([memcached.address], checksum_key=SECRET, stale_grace=30)
    c.put("k", 1, 100)
    assert 125 <= server_ttl(memcached, mkey("k")) <= 131
    c.put("forever", 1, float("inf"))
    assert server_ttl(memcached, mkey("forever")) == -1
    c.expire("k")
    assert c.get("k", None) is None
    value, left = c.getTtl("k")
    assert value == 1 and left <= 0
    assert server_ttl(memcached, mkey("k")) <= 31
    c.close()


def test_long_ttl_uses_absolute_server_expiry(client, memcached):
    # memcached reads exptimes above 30 days as unix timestamps.
    client.put("k", 1, 40 * 86400)
    assert 40 * 86400 - 5 < server_ttl(memcached, mkey("k")) <= 40 * 86400 + 61
    assert client.get("k") == 1


# ---- clear and purge -----------------------------------------------------------------


def test_clear_is_seen_by_other_clients_at_once_and_spares_other_namespaces(memcached):
    a = MemcachedClient([memcached.address], checksum_key=SECRET, namespace="app:")
    b = MemcachedClient([memcached.address], checksum_key=SECRET, namespace="app:")
    other = MemcachedClient([memcached.address], checksum_key=SECRET, namespace="other:")
    a.put("k", 1, TTL)
    other.put("k", 2, TTL)
    assert b.get("k") == 1
    b.clear()
    assert a.get("k", None) is None
    assert other.get("k") == 2
    a.put("k", 3, TTL)  # a saw the new generation on its last read
    assert b.get("k") == 3
    for c in (a, b, other):
        c.close()


def test_clear_survives_generation_loss(client, memcached):
    client.put("k", 1, TTL)
    client.clear()
    client.put("k2", 2, TTL)
    memcached.restart()  # everything, generation included, is gone
    assert client.get("k", None) is None
    assert client.get("k2", None) is None


def test_purge_is_seen_by_other_clients(memcached):
    a = MemcachedClient([memcached.address], checksum_key=SECRET)
    b = MemcachedClient([memcached.address], checksum_key=SECRET)
    a.put("old", 1, 0.1)
    a.put("new", 2, TTL)
    time.sleep(0.2)
    assert b.getTtl("old")[1] < 0  # stale but held
    a.purge()
    with pytest.raises(CacheMissError):
        b.getTtl("old")
    assert not b.renew("old", TTL)
    assert b.get("new") == 2
    a.put("old", 3, TTL)
    assert b.get("old") == 3
    a.close()
    b.close()


# ---- several servers -----------------------------------------------------------------


def test_keys_spread_over_all_servers(memcached_factory):
    servers = memcached_factory(3)
    c = MemcachedClient([s.address for s in servers], checksum_key=SECRET)
    c.putMulti({i: i for i in range(300)}, TTL)
    counts = [int(s.stats()["curr_items"]) for s in servers]
    assert all(n > 30 for n in counts), counts
    assert dict(c.getMulti(range(300))) == {i: i for i in range(300)}
    c.close()


def test_adding_a_server_remaps_about_one_in_n_keys(memcached_factory):
    servers = memcached_factory(5)
    keys = range(10_000)
    four = MemcachedClient([s.address for s in servers[:4]], checksum_key=SECRET)
    five = MemcachedClient([s.address for s in servers], checksum_key=SECRET)
    four.putMulti({k: k for k in keys}, TTL)
    moved = sum(v is None for _, v in five.getMulti(keys, None))
    assert 0.5 / 5 * 10_000 < moved < 1.5 / 5 * 10_000, moved
    # Removing the fifth again: everything the four-server client wrote is found.
    assert all(v == k for k, v in four.getMulti(keys, None))
    four.close()
    five.close()


def test_multi_operations_take_one_round_trip_per_server(memcached_factory, monkeypatch):
    servers = memcached_factory(3)
    c = MemcachedClient([s.address for s in servers], checksum_key=SECRET)
    c.put("warm", 1, TTL)  # learns a generation... of one server only
    requests: list[tuple[str, bytes]] = []
    real_exchange = blocking.exchange

    def counted(ios, deadline):
        requests.extend((server.name, data) for server, data, _ in ios)
        return real_exchange(ios, deadline)

    for name in ("request", "request_by"):
        real = getattr(blocking.Connection, name)

        def one(conn, data, reply, deadline, real=real):
            requests.append(("{}:{}".format(*conn.address), data))
            return real(conn, data, reply, deadline)

        monkeypatch.setattr(blocking.Connection, name, one)
    monkeypatch.setattr(blocking, "exchange", counted)
    c.putMulti({i: str(i) for i in range(100)}, TTL)
    # (Besides a read of the generation from the two servers it had not seen yet.)
    sets = [server for server, data in requests if b"\r\nset " in data]
    assert sorted(sets) == sorted(s.address for s in servers)
    requests.clear()
    assert dict(c.getMulti(range(100))) == {i: str(i) for i in range(100)}
    gets = [server for server, _ in requests]
    assert sorted(gets) == sorted(s.address for s in servers)
    c.close()


# ---- big values ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [3 * MB, 20 * MB], ids=["3MB", "20MB"])
def test_big_incompressible_values_are_paged(memcached_factory, size):
    [server] = memcached_factory(1, memory_mb=128)
    c = MemcachedClient([server.address], checksum_key=SECRET)
    value = os.urandom(size)
    c.put("big", value, TTL)
    assert c.get("big") == value
    pages = page_keys(c, server, "big")
    assert len(pages) >= size // MB
    assert all(raw(server).get(p) for p in pages[:2])
    assert c.getTtl("big")[1] > TTL - 10
    assert dict(c.getMulti(["big", "none"], None)) == {"big": value, "none": None}
    c.close()


def _pages_left(servers, pages) -> list[bytes]:
    """The page keys still stored on any of ``servers``."""
    return [p for p in pages if any(raw(s).get(p) is not None for s in servers)]


@pytest.mark.parametrize(
    "then",
    [
        "put small",
        "put paged",
        "putMulti small",
        "putMulti paged",
        "delete",
        "update",
        "add over stale",
    ],
)
def test_overwritten_or_deleted_paged_values_take_their_pages_along(memcached_factory, then):
    servers = memcached_factory(2)  # pages spread over both
    c = MemcachedClient([s.address for s in servers], checksum_key=SECRET)
    [home] = [s for s in servers if s.address == c._locate("big")[2].name]
    big = os.urandom(5 * MB // 2)
    c.put("big", big, TTL)
    old_pages = page_keys(c, home, "big")
    assert len(old_pages) >= 3 and _pages_left(servers, old_pages) == old_pages
    if then == "put small":
        c.put("big", "small now", TTL)
        assert c.get("big") == "small now"
    elif then in ("put paged", "putMulti paged"):
        if then == "put paged":
            c.put("big", big[::-1], TTL)
        else:
            c.putMulti({"other": 1, "big": big[::-1]}, TTL)
        assert c.get("big") == big[::-1]
        new_pages = page_keys(c, home, "big")
        assert _pages_left(servers, new_pages) == new_pages
    elif then == "putMulti small":
        c.putMulti({**{f"k{i}": i for i in range(20)}, "big": "small now"}, TTL)
        assert c.get("big") == "small now"
        assert dict(c.getMulti(f"k{i}" for i in range(20))) == {f"k{i}": i for i in range(20)}
    elif then == "delete":
        c.delete("big")
        assert c.get("big", None) is None
    elif then == "update":
        assert c.update("big", lambda v: v[:10]) == big[:10]
    else:
        c.expire("big")
        assert c.add("big", "added", TTL)
        assert c.get("big") == "added"
    # Deleted without waiting for replies (noreply): the servers may take a moment.
    assert _until(lambda: _pages_left(servers, old_pages) == [])
    assert c.stats.errors == 0
    c.close()


def test_async_overwrite_and_delete_take_pages_along(memcached):
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    big = os.urandom(5 * MB // 2)

    async def scenario():
        await c.aput("big", big, TTL)
        first = page_keys(c, memcached, "big")
        await c.aput("big", big[::-1], TTL)
        assert await c.aget("big") == big[::-1]
        second = page_keys(c, memcached, "big")
        await c.adelete("big")
        assert await c.aget("big", None) is None
        await c.aput("big", big, TTL)
        third = page_keys(c, memcached, "big")
        await c.aputMulti({"big": "small now", "other": 2}, TTL)
        assert await c.agetMulti(["big", "other"]) == [("big", "small now"), ("other", 2)]
        return first + second + third

    pages = asyncio.run(scenario())
    # Deleted without waiting for replies (noreply): the server may take a moment.
    assert _until(lambda: _pages_left([memcached], pages) == [])
    assert c.stats.errors == 0
    c.close()


def test_small_values_carry_no_page_flags(client, memcached):
    # Only manifests carry flags (the probe's signal that there are pages to delete).
    client.put("small", "v", TTL)
    reply = raw(memcached).raw_command(b"mg " + mkey("small") + b" f")
    assert reply.split() == [b"HD", b"f0"]
    client.delete("small")
    assert client.get("small", None) is None


def _paged(memcached, value=None):
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    c.put("big", value if value is not None else os.urandom(3 * MB), TTL)
    pages = page_keys(c, memcached, "big")
    assert len(pages) >= 3
    return c, pages


def test_missing_page_makes_a_miss(memcached):
    c, pages = _paged(memcached)
    raw(memcached).delete(pages[1])
    assert c.get("big", "miss") == "miss"
    c.close()


def test_foreign_page_makes_a_miss(memcached):
    c, pages = _paged(memcached)
    r = raw(memcached)
    first = {k: r.get(k) for k in pages}
    c.put("other", os.urandom(3 * MB), TTL)
    foreign = page_keys(c, memcached, "other")
    r.set(pages[0], r.get(foreign[0]), expire=60)
    assert c.get("big", "miss") == "miss"
    # Corrupting one byte of a page is caught too.
    r.set(pages[0], first[pages[0]], expire=60)
    assert len(c.get("big")) == 3 * MB
    page = bytearray(first[pages[2]])
    page[100] ^= 0xFF
    r.set(pages[2], bytes(page), expire=60)
    assert c.get("big", "miss") == "miss"
    c.close()


def test_paged_values_renew_expire_and_add(memcached):
    value = os.urandom(3 * MB)
    c, pages = _paged(memcached, value)
    assert c.renew("big", 2 * TTL)
    assert server_ttl(memcached, pages[0]) > TTL + 30
    assert c.getTtl("big")[1] > TTL + 30
    assert not c.add("big", b"other", TTL)
    c.expire("big")
    assert c.getTtl("big")[0] == value
    assert c.add("big", b"small", TTL)
    assert c.get("big") == b"small"
    c.close()


def test_larger_item_size_setting(memcached_factory):
    [server] = memcached_factory(1, item_size="4m")
    c = MemcachedClient([server.address], checksum_key=SECRET, max_item_size=4 * MB)
    value = os.urandom(3 * MB)
    c.put("big", value, TTL)
    assert c.get("big") == value
    assert raw(server).get(mkey("big"))[8:10] == b"\xc4\xde"  # a plain payload, no manifest
    assert len(raw(server).get(mkey("big"))) > 3 * MB
    c.close()


# ---- faults --------------------------------------------------------------------------


def _fast_failing(servers, **options):
    options = {"connect_timeout": 0.3, "timeout": 0.3, "retry_interval": 0.3, **options}
    return MemcachedClient([s.address for s in servers], checksum_key=SECRET, **options)


def _until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _suspend(server) -> None:
    """``server.suspend()``, then wait until it stops answering: SIGSTOP lands a moment later,
    and a request sent at once (a native async call is that quick) could still be served."""
    server.suspend()
    for _ in range(100):  # bounded
        try:
            server.command_line(b"version", timeout=0.05)
        except OSError:
            return
    raise AssertionError(f"memcached {server.address} still answers after SIGSTOP")


def test_killed_server_degrades_to_misses_then_comes_back(memcached_factory, caplog):
    servers = memcached_factory(2)
    c = _fast_failing(servers)
    keys = range(200)
    c.putMulti({k: k for k in keys}, TTL)
    on_first = [k for k in keys if c._locate(k)[2].name == servers[0].address]
    assert on_first
    caplog.set_level(logging.WARNING, "chorde.clients.memcached")
    servers[0].stop()
    for k in keys:  # every operation returns; none raises
        got = c.get(k, None)
        assert got is None if k in on_first else got == k
        c.put(k, k, TTL)
        c.getTtl(k, None)
        c.add(k, k, TTL)
        c.renew(k, TTL)
        c.expire(k)
        c.delete(k)
        c.contains(k)
    assert dict(c.getMulti(on_first, None)) == dict.fromkeys(on_first)
    assert c.putMulti({k: k for k in keys}, TTL) == on_first  # the keys not stored, in order
    on_second = [k for k in keys if k not in on_first]
    big = "x" * 3_000_000  # paged: stored by a put of its own
    assert c.putMulti({on_first[0]: big, on_second[0]: 1}, TTL) == [on_first[0]]
    c.clear()
    c.purge()
    assert c.stats.errors > len(on_first)
    down_logs = [r for r in caplog.records if "treating it as down" in r.getMessage()]
    assert len(down_logs) == 1  # rate limited
    with pytest.raises(CacheMissError):
        c.get(on_first[0])

    servers[0].start()  # same port, empty

    def back():
        c.put(on_first[0], "again", TTL)
        return c.get(on_first[0], None) == "again"

    assert _until(back)
    c.close()


def test_refused_connection_never_raises(unused_port):
    c = MemcachedClient([f"127.0.0.1:{unused_port}"], checksum_key=SECRET, retry_interval=0.1)
    for _ in range(3):
        c.put("k", 1, TTL)
        assert c.get("k", None) is None
        assert dict(c.getMulti(["k"], 0)) == {"k": 0}
        assert not c.add("k", 1, TTL)
        time.sleep(0.05)
    assert c.capacity == 0 and c.usage == 0
    assert c.stats.errors >= 3
    c.close()


def test_hung_server_is_bounded_by_the_timeout(memcached):
    c = _fast_failing([memcached], retry_interval=0.5)
    c.put("k", 1, TTL)
    _suspend(memcached)
    results = []
    worker = threading.Thread(
        target=lambda: results.append((c.get("k", "miss"), c.put("k", 2, TTL)))
    )
    try:
        worker.start()
        worker.join(10)  # without the I/O timeout this would hang for good
        assert not worker.is_alive()
        assert results == [("miss", None)]
    finally:
        memcached.resume()

    def back():
        got = c.get("k", None)
        assert got != 1  # the put of 2 failed: 1, older, must never come back
        c.put("k", 3, TTL)
        return c.get("k", None) == 3

    assert _until(back)
    c.close()


def test_async_methods_do_not_block_the_event_loop(memcached):
    c = _fast_failing([memcached], timeout=0.5)
    _suspend(memcached)

    async def scenario():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        assert await c.aget("k", "miss") == "miss"
        stop.set()
        await task
        return ticks

    try:
        assert asyncio.run(scenario()) > 3
    finally:
        memcached.resume()
    c.close()


# ---- compare-and-swap update ---------------------------------------------------------


def test_update_replaces_the_value_and_keeps_or_sets_the_ttl(client):
    client.put("n", 1, 100)
    assert client.update("n", lambda v: v + 1) == 2
    value, left = client.getTtl("n")
    assert value == 2 and 90 < left <= 100  # ttl kept
    assert client.updateTtl("n", lambda v: v * 10, ttl=5000)[0] == 20
    assert 4900 < client.getTtl("n")[1] <= 5000
    assert client.get("n") == 20


def test_update_of_missing_or_stale_entries_is_a_miss(client):
    with pytest.raises(CacheMissError):
        client.update("missing", lambda v: v + 1)
    client.put("stale", 1, TTL)
    client.expire("stale")
    with pytest.raises(CacheMissError):
        client.update("stale", lambda v: v + 1)
    assert client.getTtl("stale")[0] == 1


def test_update_lets_fn_errors_through_and_changes_nothing(client):
    client.put("s", "text", TTL)
    with pytest.raises(TypeError):
        client.update("s", lambda v: v + 1)
    assert client.get("s") == "text"
    assert client.stats.errors == 0


def test_update_of_a_paged_value(memcached):
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    big = os.urandom(3 * MB // 2)
    c.put("big", big, TTL)
    assert c.update("big", lambda v: v + b"!") == big + b"!"
    assert c.get("big") == big + b"!"
    c.close()


def test_concurrent_updates_from_many_clients_lose_no_increment(memcached):
    clients = [MemcachedClient([memcached.address], checksum_key=SECRET) for _ in range(6)]
    clients[0].put("counter", 0, TTL)
    errors = []

    def work(c):
        try:
            for _ in range(40):
                c.update("counter", lambda v: v + 1)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert clients[0].get("counter") == 6 * 40
    for c in clients:
        c.close()


def test_update_on_a_down_server_is_a_miss(memcached):
    c = _fast_failing([memcached])
    c.put("n", 1, TTL)
    memcached.stop()
    with pytest.raises(CacheMissError):
        c.update("n", lambda v: v + 1)
    assert c.stats.errors >= 1
    c.close()


# ---- native asyncio ------------------------------------------------------------------


class _NoExecutor(concurrent.futures.ThreadPoolExecutor):
    """An executor that refuses work: the awaitable methods must not need one."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted: list[object] = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted.append(fn)
        raise AssertionError(f"executor used for {fn!r}")


def test_async_methods_never_use_an_executor(memcached):
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    big = os.urandom(3 * MB // 2)  # paged

    async def scenario():
        executor = _NoExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        await c.aput("k", {"v": 1}, TTL)
        assert await c.aget("k") == {"v": 1}
        assert (await c.agetTtl("k"))[1] > TTL - 60
        assert await c.acontains("k")
        await c.aputMulti({i: i * 2 for i in range(30)}, TTL)
        assert await c.agetMulti(range(30)) == [(i, i * 2) for i in range(30)]
        assert [k for k, (v, _) in await c.agetTtlMulti(["k", "nope"], None)] == ["k", "nope"]
        assert not await c.aadd("k", 2, TTL)
        assert await c.aadd("new", 3, TTL)
        assert await c.arenew("k", 10)  # only extends: the longer life stays
        assert (await c.agetTtl("k"))[1] > TTL - 60
        assert await c.arenew("k", 2 * TTL)
        assert (await c.agetTtl("k"))[1] > TTL + 60
        await c.aexpire("k")
        assert await c.aget("k", "stale") == "stale"
        assert (await c.agetTtl("k"))[0] == {"v": 1}
        await c.aput("big", big, TTL)
        assert await c.aget("big") == big
        await c.adelete("new")
        assert await c.aget("new", None) is None
        await c.aclear()
        assert await c.aget(3, None) is None
        return executor.submitted

    assert asyncio.run(scenario()) == []
    # What the async path wrote, the blocking path reads (same keys, same payloads).
    c.put("sync", 1, TTL)
    assert asyncio.run(c.aget("sync")) == 1
    asyncio.run(c.aput("async", 2, TTL))
    assert c.get("async") == 2
    c.close()


def test_async_killed_server_degrades_to_misses_then_comes_back(memcached_factory, caplog):
    servers = memcached_factory(2)
    c = _fast_failing(servers)
    keys = list(range(100))
    on_first = [k for k in keys if c._locate(k)[2].name == servers[0].address]
    caplog.set_level(logging.WARNING, "chorde.clients.memcached")

    async def scenario():
        await c.aputMulti({k: k for k in keys}, TTL)
        assert await c.agetMulti(keys) == [(k, k) for k in keys]
        servers[0].stop()
        for k in keys:  # every operation returns; none raises
            got = await c.aget(k, None)
            assert got is None if k in on_first else got == k
            await c.aput(k, k, TTL)
            await c.agetTtl(k, None)
            await c.aadd(k, k, TTL)
            await c.arenew(k, TTL)
            await c.aexpire(k)
            await c.adelete(k)
            await c.acontains(k)
        assert await c.agetMulti(on_first, None) == [(k, None) for k in on_first]
        await c.aputMulti({k: k for k in on_first}, TTL)
        await c.aclear()
        with pytest.raises(CacheMissError):
            await c.aget(on_first[0])
        servers[0].start()  # same port, empty
        for _ in range(250):  # bounded: ~5 s
            await c.aput(on_first[0], "again", TTL)
            if await c.aget(on_first[0], None) == "again":
                return True
            await asyncio.sleep(0.02)
        return False

    assert asyncio.run(scenario())
    assert c.stats.errors > len(on_first)
    down_logs = [r for r in caplog.records if "treating it as down" in r.getMessage()]
    assert len(down_logs) == 1  # rate limited
    c.close()


def test_async_hung_server_is_bounded_by_the_timeout_then_recovers(memcached):
    c = _fast_failing([memcached], retry_interval=0.5)
    c.put("k", 1, TTL)

    async def scenario():
        assert await c.aget("k") == 1  # the loop's connection is open before the hang
        _suspend(memcached)
        try:
            # Without the I/O timeout these would wait for good; wait_for only bounds the test.
            got = await asyncio.wait_for(c.aget("k", "miss"), 10)
            await asyncio.wait_for(c.aput("k", 2, TTL), 10)
            many = await asyncio.wait_for(c.agetMulti(["k"], "miss"), 10)
        finally:
            memcached.resume()
        for _ in range(250):  # bounded: ~5 s
            # The put of 2 failed: 1, older, must never come back.
            assert await c.aget("k", None) != 1
            await c.aput("k", 3, TTL)
            if await c.aget("k", None) == 3:
                return got, many, True
            await asyncio.sleep(0.02)
        return got, many, False

    assert asyncio.run(scenario()) == ("miss", [("k", "miss")], True)
    assert c.stats.errors >= 1
    c.close()


def test_async_concurrent_calls_and_cancellations_never_cross_replies(memcached):
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    c.putMulti({i: f"value {i}" for i in range(200)}, TTL)

    async def scenario():
        async def read(i):
            assert await c.aget(i) == f"value {i}"
            assert await c.agetMulti([i, i + 1]) == [(i, f"value {i}"), (i + 1, f"value {i + 1}")]
            return i

        for round_no in range(5):
            tasks = [asyncio.create_task(read(i)) for i in range(150)]
            await asyncio.sleep(0)
            # Cancel some mid-flight: their connection may be left mid-reply.
            for task in tasks[round_no::7]:
                task.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            kept = [d for d in done if not isinstance(d, asyncio.CancelledError)]
            assert kept == [i for i, d in enumerate(done) if d == i]
        return [await c.aget(i) for i in range(200)]

    assert asyncio.run(scenario()) == [f"value {i}" for i in range(200)]
    assert c.stats.errors == 0
    c.close()


def test_async_connections_close_with_their_event_loop(memcached):
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3):
            asyncio.run(c.aput(i, i, TTL))
            assert asyncio.run(c.aget(i)) == i
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    [server] = c._servers.ring.nodes
    assert len(server._aconns) == 0  # one per loop, gone with it
    c.close()


# ---- concurrency ---------------------------------------------------------------------


def test_threads_hammering_one_client(memcached):
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    errors: list[BaseException] = []
    wrong: list[tuple] = []

    def work(tid: int) -> None:
        try:
            for i in range(10_000):
                key = (tid % 4, i % 37)
                op = i % 6
                if op == 0:
                    c.put(key, (key, i), TTL)
                elif op == 1:
                    got = c.get(key, None)
                    if got is not None and got[0] != key:
                        wrong.append((key, got))
                elif op == 2:
                    got = dict(c.getMulti([key, (tid % 4, (i + 1) % 37)], None))
                    for k, v in got.items():
                        if v is not None and v[0] != k:
                            wrong.append((k, v))
                elif op == 3:
                    c.add(key, (key, -i), TTL)
                elif op == 4:
                    c.delete(key) if i % 12 == 4 else c.renew(key, TTL)
                else:
                    value = c.getTtl(key, None)[0]
                    if value is not None and value[0] != key:
                        wrong.append((key, value))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert not errors
    assert not wrong
    assert c.stats.errors == 0
    c.close()


def _server_connections(server) -> int:
    r = raw(server)
    try:
        return int(r.stats()[b"curr_connections"]) - 1  # not counting this one
    finally:
        r.close()


def test_thread_connections_close_when_their_threads_end(memcached):
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    c.put("k", 1, TTL)
    before = _server_connections(memcached)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            # Executor threads, as the base class's awaitables and Django's async use.
            barrier = threading.Barrier(4)

            def work(i):
                barrier.wait(10)  # every worker thread opens its own connection
                c.put(i, i, TTL)
                return c.get(i)

            assert list(pool.map(work, range(4))) == list(range(4))
            assert _server_connections(memcached) >= before + 4
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    # The server saw them go (bounded wait: it notices the close asynchronously).
    assert _until(lambda: _server_connections(memcached) <= before)
    assert c.get("k") == 1  # this thread's connection is still fine
    c.close()


def test_concurrent_add_has_one_winner(memcached):
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    for round_ in range(5):
        key = ("add", round_)
        results: list[bool] = []
        barrier = threading.Barrier(8)

        def attempt(i, key=key, results=results, barrier=barrier):
            barrier.wait(5)
            results.append(c.add(key, i, TTL))

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results.count(True) == 1
    c.close()


def test_dropped_server_stays_open_for_callers_of_the_old_ring(memcached_factory):
    """Two ring updates in a row must not close a server a caller picked before the first."""
    a, b, c = memcached_factory(3)
    client = MemcachedClient([a.address, b.address], checksum_key="k")
    try:
        old = client._servers[(a.host, a.port)]
        conn = old.conn()  # this thread's connection, as an in-flight call holds it
        request = protocol.store(b"set", b"x", 0, 0, [b"1"])
        assert conn.request_by(request, protocol.Line(), time.monotonic() + 5) == b"STORED"
        client._servers.set([(b.host, b.port)])
        client._servers.set([(b.host, b.port), (c.host, c.port)])
        assert conn.sock is not None
        got = conn.request_by(protocol.get([b"x"]), protocol.Values(), time.monotonic() + 5)
        assert got == {b"x": b"1"}
    finally:
        client.close()
    assert conn.sock is None  # closed with the client
