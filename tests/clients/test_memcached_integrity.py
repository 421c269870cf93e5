"""What signing protects a memcached namespace against (docs/concepts/serialization.md,
"Threat model"): forged or unsigned generation records, values moved between keys or
namespaces, values from before a clear; and what it leaves alone (other applications with
other secrets in the same namespace, a key rotation in progress)."""

from __future__ import annotations

import logging
import threading

import pytest
from pymemcache.client.base import Client as RawClient

from chorde.clients.memcached import MemcachedClient
from chorde.keys import memcache_key
from chorde.serialization import InvalidPayload, Serializer
from tests.clients.conftest import SECRET

TTL = 300


@pytest.fixture
def raw(memcached):
    r = RawClient((memcached.host, memcached.port), default_noreply=False, timeout=5)
    yield r
    r.close()


def _client(memcached, **options) -> MemcachedClient:
    options.setdefault("checksum_key", SECRET)
    return MemcachedClient([memcached.address], **options)


def _mkey(key, namespace="") -> bytes:
    return memcache_key(key, namespace)[0].encode()


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# ---- Serializer.bound ------------------------------------------------------------------


def test_a_bound_payload_verifies_only_under_the_same_context():
    base = Serializer("secret")
    payload = base.bound(b"one").dumps("v", key=b"k")
    assert base.bound(b"one").loads(payload, key=b"k")[0] == "v"
    assert Serializer(["other", "secret"]).bound(b"one").loads(payload, key=b"k")[0] == "v"
    for reader in (base, base.bound(b"two"), base.bound(b"on"), Serializer("x").bound(b"one")):
        with pytest.raises(InvalidPayload):
            reader.loads(payload, key=b"k")
    with pytest.raises(InvalidPayload):  # and the other way round
        base.bound(b"one").loads(base.dumps("v", key=b"k"), key=b"k")
    assert base.bound(b"one") is base.bound(b"one")  # kept
    assert base.bound(b"one").key_id == base.key_id  # the key ids stay (rotation)
    with pytest.raises(TypeError, match="context"):
        base.bound("one")  # type: ignore[arg-type]


# ---- the generation record -------------------------------------------------------------


def test_the_generation_record_is_signed_and_named_after_the_oldest_key(memcached, raw):
    c = _client(memcached, checksum_key=["new", "old"], namespace="ns:")
    c.put("k", 1, TTL)
    assert c._gen_key == b"ns:~gen." + Serializer("old").key_id.hex().encode()
    record = raw.get(c._gen_key)
    assert record[:2] == b"\xc4\xde"  # a signed chorde payload, not bare bytes
    c.close()


@pytest.mark.parametrize("forgery", ["unsigned", "other secret", "garbage", "deleted"])
def test_a_record_that_does_not_verify_reads_as_absent_and_is_rewritten(
    memcached, raw, caplog, forgery
):
    c = _client(memcached)
    other = _client(memcached)  # another process of the application
    c.put("k", "before", TTL)
    assert other.get("k") == "before"
    if forgery == "unsigned":  # what the record used to be: 8 bytes of generation
        raw.set(c._gen_key, raw.get(_mkey("k"))[:8])
    elif forgery == "other secret":
        raw.set(c._gen_key, Serializer("another secret").dumps((b"x" * 8, 0.0, 1e12)))
    elif forgery == "garbage":
        raw.set(c._gen_key, b"\xc4\xde" + bytes(100))
    else:
        raw.delete(c._gen_key)
    caplog.set_level(logging.INFO, "chorde.clients.memcached")
    assert other.get("k", None) is None  # not trusted: the entries from before are dropped
    warned = [w for w in _warnings(caplog) if "generation record" in w]
    assert bool(warned) is (forgery != "deleted")  # (an absent record is no attack sign)
    rewritten = raw.get(c._gen_key)
    assert rewritten[:2] == b"\xc4\xde" and Serializer(SECRET).key_id in rewritten
    # ...and the cache works at once, for every client.
    other.put("k", "after", TTL)
    assert c.get("k") == "after"
    c.close()
    other.close()


def test_a_replayed_older_record_is_not_trusted(memcached, raw, caplog):
    c = _client(memcached)
    c.put("k", "before the clear", TTL)
    old_record, old_item = raw.get(c._gen_key), raw.get(_mkey("k"))
    c.clear()
    assert c.get("k", None) is None
    c.put("k2", "after the clear", TTL)
    # Someone with write access puts back the record and the value from before the clear.
    raw.set(c._gen_key, old_record)
    raw.set(_mkey("k"), old_item)
    assert c.get("k", None) is None
    assert any("older than one seen" in w for w in _warnings(caplog))
    assert c.get("k", None) is None  # replaced: the old generation is gone for good
    c.put("k", "new", TTL)
    assert c.get("k") == "new"
    c.close()


# ---- values ------------------------------------------------------------------------------


def test_a_value_from_before_a_clear_does_not_verify_under_the_new_generation(memcached, raw):
    c = _client(memcached)
    c.put("k", "before", TTL)
    old_item = raw.get(_mkey("k"))
    c.clear()
    c.put("other", 1, TTL)
    new_gen = raw.get(_mkey("other"))[:8]
    raw.set(_mkey("k"), new_gen + old_item[8:])  # the old payload under the new generation
    errors = c.stats.errors
    assert c.get("k", None) is None
    assert c.stats.errors == errors + 1  # a bad signature, counted
    c.close()


def test_a_value_moved_to_another_namespace_or_key_does_not_verify(memcached, raw):
    a = _client(memcached, namespace="a:")
    b = _client(memcached, namespace="b:")
    a.put("k", "a's", TTL)
    b.put("k", "b's", TTL)
    b.put("j", "b's j", TTL)
    item, b_gen = raw.get(_mkey("k", "a:")), raw.get(_mkey("k", "b:"))[:8]
    raw.set(_mkey("k", "b:"), b_gen + item[8:])  # a's value, b's generation in front
    assert b.get("k", None) is None
    raw.set(_mkey("j", "b:"), raw.get(_mkey("k", "a:")))
    assert b.get("j", None) is None
    a.close()
    b.close()


# ---- what is left alone ----------------------------------------------------------------


def test_applications_with_other_secrets_in_one_namespace_keep_their_caches(memcached, caplog):
    one = _client(memcached, checksum_key="application one")
    two = _client(memcached, checksum_key="application two")
    caplog.set_level(logging.WARNING, "chorde.clients.memcached")
    for i in range(50):
        one.put(("one", i), i, TTL)
        two.put(("two", i), i, TTL)
        assert one.get(("one", i)) == i and two.get(("two", i)) == i
    two.clear()
    assert one.get(("one", 3)) == 3  # each has a generation of its own
    assert two.get(("two", 3), None) is None
    assert _warnings(caplog) == []
    one.close()
    two.close()


def test_clients_midway_through_a_key_rotation_share_the_generation(memcached):
    old = _client(memcached, checksum_key="old")
    rotating = _client(memcached, checksum_key=["new", "old"])
    new = _client(memcached, checksum_key="new")
    old.put("k", "signed with old", TTL)
    assert rotating.get("k") == "signed with old"
    rotating.clear()  # one generation: a clear by either is a clear for both
    assert old.get("k", None) is None
    assert new.get("k", None) is None  # the old key is not new's: its values are misses
    for c in (old, rotating, new):
        c.close()


def test_clients_starting_together_settle_on_one_generation(memcached):
    clients = [_client(memcached) for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    errors = []

    def start(i, c):
        try:
            barrier.wait(10)
            c.put(("k", i), i, TTL)  # each settles a record on the empty server
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    for c in clients:  # one generation: every write is seen by every client
        assert [c.get(("k", i), None) for i in range(len(clients))] == list(range(len(clients)))
    for c in clients:
        c.close()
