"""Consistent hashing: stable placement, balanced load, minimal remapping."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from chorde.hashring import HashRing, key_hash

KEYS = [b"key:%d" % i for i in range(10_000)]
SERVERS = [f"10.0.0.{i}:11211" for i in range(1, 6)]


def _placement(ring: HashRing) -> dict[bytes, str]:
    return {k: ring.get_node(k) for k in KEYS}


def test_empty_ring_raises_lookup_error():
    with pytest.raises(LookupError):
        HashRing().get_node(b"x")


def test_single_node_owns_everything():
    ring = HashRing(["only"])
    assert {ring.get_node(k) for k in KEYS[:100]} == {"only"}


def test_load_is_roughly_even():
    counts = Counter(_placement(HashRing(SERVERS)).values())
    assert set(counts) == set(SERVERS)
    expected = len(KEYS) / len(SERVERS)
    for server, count in counts.items():
        assert 0.6 * expected < count < 1.4 * expected, (server, counts)


def test_adding_a_node_moves_about_one_in_n_keys_all_to_the_new_node():
    before = _placement(HashRing(SERVERS))
    new = "10.0.0.9:11211"
    after = _placement(HashRing([*SERVERS, new]))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == new for k in moved)
    share = len(moved) / len(KEYS)
    assert 0.5 / 6 < share < 1.6 / 6, share


def test_removing_a_node_moves_only_its_keys():
    before = _placement(HashRing(SERVERS))
    gone = SERVERS[2]
    after = _placement(HashRing([s for s in SERVERS if s != gone]))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved
    assert all(before[k] == gone for k in moved)
    assert len(moved) == sum(1 for k in KEYS if before[k] == gone)
    assert 0.5 / 5 < len(moved) / len(KEYS) < 1.6 / 5


def test_node_order_does_not_matter():
    a = _placement(HashRing(SERVERS))
    b = _placement(HashRing(list(reversed(SERVERS))))
    assert a == b


def test_weights_shift_load():
    ring = HashRing({"heavy": 3, "light": 1})
    counts = Counter(ring.get_node(k) for k in KEYS)
    assert counts["heavy"] > 2 * counts["light"]


def test_placement_is_stable_across_processes():
    # hash() is salted per process; the ring must not depend on it.
    code = (
        "from chorde.hashring import HashRing;"
        f"r = HashRing({SERVERS!r});"
        "print(','.join(r.get_node(b'key:%d' % i) for i in range(50)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    ).stdout.strip()
    ring = HashRing(SERVERS)
    assert out == ",".join(ring.get_node(b"key:%d" % i) for i in range(50))


def test_key_hash_is_32_bit_and_deterministic():
    assert key_hash(b"abc") == key_hash(b"abc")
    assert 0 <= key_hash(b"abc") < 2**32


def test_with_nodes_keeps_settings_and_does_not_mutate():
    ring = HashRing(["a", "b"], points_per_node=40)
    bigger = ring.with_nodes(["a", "b", "c"])
    assert ring.nodes == ["a", "b"]
    assert bigger.nodes == ["a", "b", "c"]
    assert bigger.points_per_node == 40
    assert "c" in bigger and "c" not in ring


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_points_per_node(bad):
    with pytest.raises((TypeError, ValueError), match="points_per_node"):
        HashRing(["a"], points_per_node=bad)


def test_bad_weight_names_the_node():
    with pytest.raises(ValueError, match="'a'"):
        HashRing({"a": 0})
