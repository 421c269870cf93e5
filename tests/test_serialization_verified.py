"""Serializer.loads remembers small payloads that verified: the same bytes read again skip the
HMAC, and nothing else does (another byte, key, offset or context is verified in full)."""

from __future__ import annotations

import pytest

from chorde import serialization
from chorde.serialization import InvalidPayload, Serializer

KEY = b"\x01k"
EXPIRES = 2e9


@pytest.fixture
def ser():
    return Serializer("a secret")


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]


def test_reading_again_gives_a_fresh_equal_value(ser):
    payload = ser.dumps({"a": [1, 2]}, key=KEY, expires=EXPIRES)
    first, _ = ser.loads(payload, key=KEY)
    assert payload in ser._verified
    again = ser.loads(bytes(bytearray(payload)), key=KEY)  # another object, the same bytes
    assert again == ({"a": [1, 2]}, EXPIRES)
    assert again[0] is not first  # unpickled again: a caller mutating it changes no other


def test_every_changed_byte_or_truncation_of_a_verified_payload_is_invalid(ser):
    payload = ser.dumps("value", key=KEY, expires=EXPIRES)
    ser.loads(payload, key=KEY)
    for i in range(len(payload)):
        with pytest.raises(InvalidPayload):
            ser.loads(_flip(payload, i), key=KEY)
    for cut in (1, 10, len(payload) - 1):
        with pytest.raises(InvalidPayload):
            ser.loads(payload[:-cut], key=KEY)
    assert ser.loads(payload, key=KEY) == ("value", EXPIRES)


def test_a_verified_payload_under_another_key_or_offset_is_invalid(ser):
    payload = ser.dumps("value", key=KEY, expires=EXPIRES)
    prefixed = b"\0" * 8 + payload
    assert ser.loads(prefixed, key=KEY, offset=8) == ("value", EXPIRES)
    with pytest.raises(InvalidPayload, match="another key"):
        ser.loads(prefixed, key=b"\x01other", offset=8)
    with pytest.raises(InvalidPayload):
        ser.loads(prefixed, key=KEY, offset=0)
    with pytest.raises(InvalidPayload):
        ser.loads(prefixed, key=KEY, offset=4)


def test_a_payload_verified_in_one_context_is_invalid_in_another(ser):
    one, two = ser.bound(b"one"), ser.bound(b"two")
    payload = one.dumps("value", key=KEY, expires=EXPIRES)
    assert one.loads(payload, key=KEY) == ("value", EXPIRES)
    assert one._verified is ser._verified is two._verified
    for other in (two, ser):
        with pytest.raises(InvalidPayload, match="bad signature"):
            other.loads(payload, key=KEY)
    assert ser.dumps("value", key=KEY, expires=EXPIRES) != payload
    with pytest.raises(InvalidPayload, match="unknown checksum_key"):
        Serializer("another secret").loads(payload, key=KEY)


def test_large_payloads_are_not_remembered_and_the_memo_is_bounded(ser):
    big = ser.dumps(b"x" * serialization._VERIFIED_SIZE, key=KEY, expires=EXPIRES)
    assert ser.loads(big, key=KEY)[0] == b"x" * serialization._VERIFIED_SIZE
    assert big not in ser._verified
    for i in range(serialization._VERIFIED_MAX + 10):
        ser.loads(ser.dumps(i, key=KEY, expires=EXPIRES), key=KEY)
        assert len(ser._verified) <= serialization._VERIFIED_MAX
    assert ser.loads(ser.dumps(-1, key=KEY, expires=EXPIRES), key=KEY) == (-1, EXPIRES)


def test_a_signed_pickle_that_fails_fails_every_time(ser):
    class Bad:
        def __reduce__(self):
            return (int, ("not a number",))

    payload = ser.dumps(Bad(), key=KEY, expires=EXPIRES)
    for _ in range(2):
        with pytest.raises(InvalidPayload, match="unpickling failed"):
            ser.loads(payload, key=KEY)
