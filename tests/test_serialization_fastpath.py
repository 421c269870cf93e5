"""Tests for Serializer.loads' fast path (small uncompressed bytes) and its ``offset``.

The fast path must accept exactly what the full path accepts and hand everything else to
it, so each case below is checked on ``bytes`` (fast path first) against ``bytearray``
(always the full path) where both apply.
"""

from __future__ import annotations

import hmac
import pickle
import struct

import pytest

from chorde.serialization import FORMAT_VERSION, InvalidPayload, Serializer

KEY = b"sapp:item:7"
HEADER = struct.Struct(">2sBB4sIdQ")  # the documented layout
PREFIX = b"GENERATN"  # what memcached puts before a payload: 8 bytes of its own
CALLS: list[int] = []


def _count_then_fail() -> None:
    CALLS.append(1)
    raise ValueError("gadget ran")


class CountingGadget:
    """Unpickling this runs _count_then_fail: counts how often a pickle was loaded."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_count_then_fail, ())


def _forge(secret: bytes, body: bytes, *, key: bytes = KEY, raw_len: int | None = None) -> bytes:
    key_id = hmac.digest(secret, b"chorde key id", "sha256")[:4]
    size = len(body) if raw_len is None else raw_len
    signed = HEADER.pack(b"\xc4\xde", FORMAT_VERSION, 0, key_id, len(key), 9.5, size) + key + body
    return signed + hmac.digest(secret, signed, "sha256")


@pytest.fixture
def ser() -> Serializer:
    return Serializer("s3cret")


def _outcome(ser: Serializer, data: object, **kw: object) -> object:
    try:
        return ser.loads(data, key=KEY, **kw)  # type: ignore[arg-type]
    except InvalidPayload as exc:
        return ("invalid", exc.reason)


@pytest.mark.parametrize(
    "value", [None, 1, "text", b"x" * 100, {"a": [1, 2]}, b"y" * 5000, "abc" * 2000]
)
def test_offset_reads_the_payload_after_a_prefix(ser: Serializer, value: object) -> None:
    payload = ser.dumps(value, key=KEY, expires=7.0)
    data = PREFIX + payload
    assert ser.loads(data, key=KEY, offset=len(PREFIX)) == (value, 7.0)
    assert ser.loads(bytearray(data), key=KEY, offset=len(PREFIX)) == (value, 7.0)
    assert ser.loads(memoryview(data), key=KEY, offset=len(PREFIX)) == (value, 7.0)
    assert ser.loads(payload, key=KEY, offset=0) == (value, 7.0)


def test_offset_checks(ser: Serializer) -> None:
    data = PREFIX + ser.dumps("v", key=KEY)
    with pytest.raises(TypeError, match="offset"):
        ser.loads(data, key=KEY, offset=-1)
    with pytest.raises(TypeError, match="offset"):
        ser.loads(data, key=KEY, offset="8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="offset"):
        ser.loads(data, key=KEY, offset=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidPayload, match="truncated"):
        ser.loads(data, key=KEY, offset=len(data) + 5)
    # The prefix is not part of the payload: a wrong offset is a foreign format.
    with pytest.raises(InvalidPayload, match="foreign"):
        ser.loads(data, key=KEY, offset=len(PREFIX) - 1)
    with pytest.raises(InvalidPayload, match="foreign"):
        ser.loads(data, key=KEY)


def test_every_flipped_bit_after_the_offset_is_rejected_like_the_full_path(
    ser: Serializer,
) -> None:
    data = PREFIX + ser.dumps({"a": 1, "b": [2, 3]}, key=KEY, expires=3.0)
    assert len(data) < 300  # bounded: every bit of it below
    for position in range(len(data)):
        for bit in range(8):
            tampered = bytearray(data)
            tampered[position] ^= 1 << bit
            fast = _outcome(ser, bytes(tampered), offset=len(PREFIX))
            full = _outcome(ser, tampered, offset=len(PREFIX))
            assert fast == full
            if position >= len(PREFIX):
                assert type(fast) is tuple and fast[0] == "invalid"
            else:
                assert fast == ({"a": 1, "b": [2, 3]}, 3.0)


def test_every_truncation_is_rejected_like_the_full_path(ser: Serializer) -> None:
    payload = ser.dumps(b"z" * 100, key=KEY)
    for length in range(len(payload)):
        fast = _outcome(ser, payload[:length])
        assert fast == _outcome(ser, bytearray(payload[:length]))
        assert type(fast) is tuple and fast[0] == "invalid"


def test_signed_pickle_that_fails_is_loaded_once_and_invalid(ser: Serializer) -> None:
    CALLS.clear()
    payload = _forge(b"s3cret", pickle.dumps(CountingGadget(), pickle.HIGHEST_PROTOCOL))
    with pytest.raises(InvalidPayload, match="unpickling failed: ValueError: gadget ran"):
        ser.loads(payload, key=KEY)
    assert CALLS == [1]


def test_unsigned_gadget_never_runs(ser: Serializer) -> None:
    CALLS.clear()
    body = pickle.dumps(CountingGadget(), pickle.HIGHEST_PROTOCOL)
    for secret in (b"wrong", b"s3cret!"):
        with pytest.raises(InvalidPayload):
            ser.loads(PREFIX + _forge(secret, body), key=KEY, offset=len(PREFIX))
    forged = bytearray(_forge(b"s3cret", body))
    forged[-1] ^= 1
    with pytest.raises(InvalidPayload, match="bad signature"):
        ser.loads(bytes(forged), key=KEY)
    assert CALLS == []


def test_rotated_keys_and_max_size_hold_on_the_fast_path() -> None:
    old = Serializer("old-secret").dumps("v" * 50, key=KEY, expires=1.0)
    rotated = Serializer(["new-secret", "old-secret"])
    assert rotated.loads(old, key=KEY) == ("v" * 50, 1.0)
    assert rotated.loads(PREFIX + old, key=KEY, offset=len(PREFIX)) == ("v" * 50, 1.0)
    # A reader with a smaller max_size than the writer's refuses the body, fast path or not.
    small_reader = Serializer("old-secret", max_size=20)
    with pytest.raises(InvalidPayload, match="max_size=20"):
        small_reader.loads(old, key=KEY)
    with pytest.raises(InvalidPayload, match="max_size=20"):
        small_reader.loads(bytearray(old), key=KEY)


def test_declared_size_must_match_on_the_fast_path(ser: Serializer) -> None:
    body = pickle.dumps("v")
    for raw_len in (len(body) - 1, len(body) + 1, 0):
        payload = _forge(b"s3cret", body, raw_len=raw_len)
        with pytest.raises(InvalidPayload, match="declared size"):
            ser.loads(payload, key=KEY)
    assert ser.loads(_forge(b"s3cret", body), key=KEY) == ("v", 9.5)
