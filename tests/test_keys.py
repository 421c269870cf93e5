"""Tests for chorde.keys: stable, unambiguous key encoding and memcached key mapping."""

from __future__ import annotations

import enum
import itertools
import math
import os
import subprocess
import sys
from collections import namedtuple
from typing import Any

import pytest

from chorde.keys import (
    DIGEST_CHARS,
    MEMCACHE_KEY_MAX,
    decode_key,
    encode_key,
    key_digest,
    memcache_key,
    memcache_safe,
    memoizable,
)

# Keys that Python may consider equal or that differ only in structure; all must encode apart.
DISTINCT_KEYS = [
    1,
    True,
    1.0,
    "1",
    b"1",
    (1,),
    (True,),
    frozenset({1}),
    0,
    False,
    0.0,
    -0.0,
    "",
    b"",
    (),
    frozenset(),
    None,
    "None",
    (None,),
    ("a", "b"),
    ("ab",),
    ("a", "b", ""),
    ("", "a", "b"),
    ("a", ("b",)),
    (("a",), "b"),
    (("a", "b"),),
    ((),),
    ((), ()),
    (((),),),
    ("1:sa",),
    ("2:sa",),
    ("a", 1),
    ("a", "1"),
    ("a", 1.0),
    ("a", True),
    frozenset({"a", "b"}),
    frozenset({"ab"}),
    ("a", frozenset({"b"})),
    frozenset({("a", "b")}),
    2**64,
    -(2**64),
    2**2000,
    2**3000,
    -(2**3000),
    -1,
    "-1",
    math.inf,
    -math.inf,
    "inf",
    1e300,
    "é",
    "e\u0301",
    "\ud800",
    b"\x00\xff",
    "x" * 300,
    ("x" * 300, "y"),
    ("x" * 299, "xy"),
]


def test_distinct_keys_have_distinct_encodings() -> None:
    encodings = [encode_key(k) for k in DISTINCT_KEYS]
    assert len(set(encodings)) == len(DISTINCT_KEYS), [
        (a, b)
        for (a, ea), (b, eb) in itertools.combinations(
            zip(DISTINCT_KEYS, encodings, strict=True), 2
        )
        if ea == eb
    ]


@pytest.mark.parametrize("key", DISTINCT_KEYS, ids=repr)
def test_encoding_round_trips(key: object) -> None:
    decoded = decode_key(encode_key(key))
    assert type(decoded) is type(key)
    assert decoded == key
    if isinstance(key, float):
        assert math.copysign(1, decoded) == math.copysign(1, key)


def test_encoding_is_pinned() -> None:
    # The format is shared by every process of a cluster: changing it is a breaking change.
    assert encode_key("abc") == b"sabc"
    assert encode_key("é") == b"s\xc3\xa9"
    assert encode_key(b"\x00") == b"b\x00"
    assert encode_key(-42) == b"i-42"
    assert encode_key(2**2001) == b"I2" + b"0" * 500
    assert encode_key(1.5) == b"f1.5"
    assert encode_key(-0.0) == b"f-0.0"
    assert encode_key(True) == b"T"
    assert encode_key(False) == b"F"
    assert encode_key(None) == b"N"
    assert encode_key(("a", 1, None)) == b"(2:sa2:i11:N"
    assert encode_key(frozenset({"b", "a"})) == b"{2:sa2:sb"
    assert encode_key(("x" * 300,)) == b"(301:s" + b"x" * 300


def test_nan_is_stable() -> None:
    assert encode_key(math.nan) == encode_key(float("nan")) == encode_key(-math.nan) == b"fnan"
    assert math.isnan(decode_key(encode_key(math.nan)))


def test_frozenset_order_independent_in_process() -> None:
    items = [f"member-{i}" for i in range(40)] + [1, 2.5, None, ("t", 1)]
    forward = frozenset(items)
    backward = frozenset(reversed(items))
    assert encode_key(forward) == encode_key(backward)
    assert encode_key(("k", forward)) == encode_key(("k", backward))


_SUBPROCESS_KEYS = (
    "frozenset(f'member-{i}' for i in range(40))",
    "('user', 42, frozenset({'x', 'y', 'z', b'w', ('n', 1)}), None, 1.5, True)",
    "frozenset({frozenset({'a', 'b'}), frozenset({'c'}), 'd', 'e', 'f'})",
    "'plain'",
)
_SUBPROCESS_SCRIPT = f"""
from chorde.keys import encode_key
keys = [{", ".join(_SUBPROCESS_KEYS)}]
print(repr(list(keys[0])))
for key in keys:
    print(encode_key(key).hex())
"""


def test_encoding_identical_across_hash_seeds() -> None:
    local = [encode_key(eval(expr)).hex() for expr in _SUBPROCESS_KEYS]
    orders = set()
    for seed in ("0", "1", "12345", "4294967295"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        order, *encodings = result.stdout.splitlines()
        orders.add(order)
        assert encodings == local, f"PYTHONHASHSEED={seed}"
    # Otherwise the test would prove nothing about order independence.
    assert len(orders) > 1


class Color(enum.IntEnum):
    RED = 1


class Mode(enum.StrEnum):
    FAST = "fast"


class Plain(enum.Enum):
    A = 1


Point = namedtuple("Point", "x y")


class Sneaky(str):
    def __str__(self) -> str:
        return "something else"

    def encode(self, *args: object, **kwargs: object) -> bytes:
        return b"something else"


def test_subclasses_encode_as_their_base_value() -> None:
    assert encode_key(Color.RED) == encode_key(1)
    assert encode_key(Mode.FAST) == encode_key("fast")
    assert encode_key(Point(1, "a")) == encode_key((1, "a"))
    assert encode_key(("k", Mode.FAST)) == encode_key(("k", "fast"))
    assert encode_key(Sneaky("value")) == encode_key("value")


@pytest.mark.parametrize(
    "key",
    [[1], {"a": 1}, {1}, bytearray(b"x"), memoryview(b"x"), object(), Plain.A, 1j, type],
    ids=repr,
)
def test_unsupported_keys_raise_type_error_naming_the_key(key: object) -> None:
    with pytest.raises(TypeError) as info:
        encode_key(key)
    message = str(info.value)
    assert type(key).__qualname__ in message
    assert repr(key)[:20] in message


def test_unsupported_nested_element_is_named() -> None:
    key = ("user", 42, ("inner", ["bad list"]))
    with pytest.raises(TypeError) as info:
        encode_key(key)
    message = str(info.value)
    assert "'user'" in message
    assert "element ['bad list']" in message
    assert "list" in message
    with pytest.raises(TypeError, match=r"element <Plain\.A: 1>"):
        encode_key(frozenset({("a", frozenset({1})), ("b", Plain.A)}))


def test_huge_bad_key_message_is_truncated() -> None:
    key = ("x" * 100_000, list(range(100_000)))
    with pytest.raises(TypeError) as info:
        encode_key(key)
    assert len(str(info.value)) < 1000


def test_too_deep_nesting_is_a_type_error() -> None:
    key: tuple = ("leaf",)
    for _ in range(200):
        key = (key,)
    with pytest.raises(TypeError, match="nested more than"):
        encode_key(key)
    shallow: tuple = ("leaf",)
    for _ in range(50):
        shallow = (shallow,)
    assert decode_key(encode_key(shallow)) == shallow


def test_decode_rejects_garbage() -> None:
    for data in (b"", b"z", b"(5:sa", b"(x:sa", b"Tx", b"s\xff"):
        with pytest.raises(ValueError, match="not an encoded key"):
            decode_key(data)


# ---- memcached keys ---------------------------------------------------------------------

_AWKWARD_KEYS = [
    "simple",
    "with space",
    "tab\there",
    "new\nline",
    "nul\x00",
    "del\x7f",
    "unicodé ключ 鍵",
    "x" * 249,
    "x" * 250,
    "x" * 10_000,
    b"\x00\x01\x02 binary",
    b"printable-bytes",
    ("tuple", 1, None),
    ("tuple with space", 2),
    ("x" * 300, 3),
    frozenset({"a", "b c"}),
    12345678901234567890,
    -1.5,
    True,
    None,
    "",
]


def _check_memcache_key(mkey: str, prefix: str) -> None:
    raw = mkey.encode("ascii")
    assert len(raw) <= MEMCACHE_KEY_MAX
    assert all(0x21 <= byte <= 0x7E for byte in raw), mkey
    assert mkey.startswith(prefix)


@pytest.mark.parametrize("prefix", ["", "app:", "p" * (MEMCACHE_KEY_MAX - 1 - DIGEST_CHARS)])
@pytest.mark.parametrize("key", _AWKWARD_KEYS, ids=lambda k: repr(k)[:30])
def test_memcache_keys_are_valid(key: object, prefix: str) -> None:
    mkey, encoded = memcache_key(key, prefix)
    assert encoded == encode_key(key)
    _check_memcache_key(mkey, prefix)


def test_short_printable_keys_stay_readable() -> None:
    assert memcache_key("user:1", "app:") == ("app:suser:1", b"suser:1")
    assert memcache_key(("user", 1), "") == ("(5:suser2:i1", b"(5:suser2:i1")
    spaced, encoded = memcache_key("with space", "app:")
    assert spaced == "app:#" + key_digest(encoded)


def test_readable_until_the_limit_then_digest() -> None:
    prefix = "ns:"
    fits = "x" * (MEMCACHE_KEY_MAX - len(prefix) - 1)  # + the tag byte
    mkey, _ = memcache_key(fits, prefix)
    assert mkey == prefix + "s" + fits
    assert len(mkey) == MEMCACHE_KEY_MAX
    mkey, encoded = memcache_key(fits + "x", prefix)
    assert mkey == prefix + "#" + key_digest(encoded)


def test_distinct_keys_give_distinct_memcache_keys() -> None:
    keys: list[object] = list(DISTINCT_KEYS) + _AWKWARD_KEYS
    keys += [f"k{i}" for i in range(1000)]
    keys += [("long" * 100, i) for i in range(500)]
    keys += ["é" * i for i in range(1, 100)]
    encodings = {encode_key(k) for k in keys}
    for prefix in ("", "app:"):
        mkeys = {memcache_key(k, prefix)[0] for k in keys}
        assert len(mkeys) == len(encodings)


def test_key_digest_and_memcache_safe() -> None:
    digest = key_digest(b"sabc")
    assert len(digest) == DIGEST_CHARS
    assert memcache_safe(digest.encode())
    assert digest == key_digest(b"sabc") != key_digest(b"sabd")
    assert memcache_safe(b"sabc")
    assert memcache_safe(b"x" * MEMCACHE_KEY_MAX)
    assert not memcache_safe(b"x" * (MEMCACHE_KEY_MAX + 1))
    for bad in (b"a b", b"a\x00", b"a\n", b"a\x7f", b"\xc3\xa9"):
        assert not memcache_safe(bad), bad


def test_bad_prefixes_are_rejected_by_name() -> None:
    too_long = "p" * (MEMCACHE_KEY_MAX - DIGEST_CHARS)
    with pytest.raises(ValueError, match=r"p{20}.*leave room"):
        memcache_key("k", too_long)
    for bad in ("has space", "ctl\x01", "ünï"):
        with pytest.raises(ValueError, match="prefix"):
            memcache_key("k", bad)
    with pytest.raises(TypeError, match="prefix must be a str"):
        memcache_key("k", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"cache key \[1\]"):
        memcache_key([1], "app:")


def test_memoizable_keys_are_those_every_equal_key_encodes_as() -> None:
    # A memo of encodings may answer only where equal keys encode alike.
    key: Any
    for key in ("k", ("k", "1"), ("k", ("a", ("b",))), ()):
        assert memoizable(key)
        assert all(encode_key(other) == encode_key(key) for other in [key, _copy(key)])
    for key in (1, 1.0, True, b"k", ("k", 1), ("k", ("a", 1.0)), frozenset({"k"}), ["k"]):
        assert not memoizable(key)
    assert ("k", 1) == ("k", 1.0) == ("k", True) and encode_key(("k", 1)) != encode_key(("k", 1.0))

    class Name(str):
        pass

    assert not memoizable(Name("k")) and not memoizable(("k", Name("k")))
    deep: object = "k"
    for _ in range(5000):  # nesting encode_key refuses: no recursion error, just "no"
        deep = (deep,)
    assert not memoizable(deep)
    with pytest.raises(TypeError, match="cannot encode cache key"):
        encode_key(deep)


def _copy(key: Any) -> Any:
    return tuple(_copy(item) for item in key) if type(key) is tuple else "".join(key)
