"""Serializer.loads remembers small payloads that verified, with the pickle they hold: the same
bytes read again skip the HMAC and the inflating, and nothing else does (another byte, key,
offset or context is verified in full)."""

from __future__ import annotations

import os
import zlib

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
    assert payload in ser._verified.entries
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
    value = os.urandom(serialization._VERIFIED_SIZE)  # (incompressible: stays that large)
    big = ser.dumps(value, key=KEY, expires=EXPIRES)
    assert ser.loads(big, key=KEY)[0] == value
    assert big not in ser._verified.entries
    for i in range(serialization._VERIFIED_MAX + 10):
        ser.loads(ser.dumps(i, key=KEY, expires=EXPIRES), key=KEY)
        assert len(ser._verified.entries) <= serialization._VERIFIED_MAX
    assert ser.loads(ser.dumps(-1, key=KEY, expires=EXPIRES), key=KEY) == (-1, EXPIRES)


def test_a_signed_pickle_that_fails_fails_every_time(ser):
    class Bad:
        def __reduce__(self):
            return (int, ("not a number",))

    payload = ser.dumps(Bad(), key=KEY, expires=EXPIRES)
    for _ in range(2):
        with pytest.raises(InvalidPayload, match="unpickling failed"):
            ser.loads(payload, key=KEY)


def _compressed(ser, value, key=KEY):
    payload = ser.dumps(value, key=key, expires=EXPIRES)
    assert payload[3] & 1, "expected a compressed payload"
    return payload


def test_a_compressed_payload_is_remembered_inflated(ser):
    page = "<tr><td>row</td></tr>\n" * 100  # a page-like value: compressed when stored
    payload = _compressed(ser, {"body": page})
    assert ser.loads(payload, key=KEY) == ({"body": page}, EXPIRES)
    entry = ser._verified.entries[payload]
    body = payload[serialization._HEADER_SIZE + len(KEY) : -32]
    assert zlib.decompress(body) == entry[3]  # the pickle, inflated
    first = ser.loads(bytes(bytearray(payload)), key=KEY)
    again = ser.loads(payload, key=KEY)
    assert first == again == ({"body": page}, EXPIRES) and first[0] is not again[0]


def test_every_changed_byte_of_a_remembered_compressed_payload_is_invalid(ser):
    payload = _compressed(ser, "abc" * 1000)
    ser.loads(payload, key=KEY)
    for i in range(len(payload)):
        with pytest.raises(InvalidPayload):
            ser.loads(_flip(payload, i), key=KEY)
    assert ser.loads(payload, key=KEY) == ("abc" * 1000, EXPIRES)


def test_a_signed_compressed_body_that_lies_about_its_size_is_invalid(ser):
    # Signed by a key holder but inconsistent: never inflated past its declared size.
    honest = _compressed(ser, "abc" * 1000)
    H = serialization._HEADER_SIZE
    header = bytearray(honest[:H])
    header[H - 8 : H] = (10).to_bytes(8, "big")  # declared size far below the real one
    body = honest[H + len(KEY) : -32]
    lying = bytes(header) + KEY + body
    lying += ser._signer.digest(lying)
    with pytest.raises(InvalidPayload, match="does not match its declared size"):
        ser.loads(lying, key=KEY)
    assert lying not in ser._verified.entries


def test_the_memo_holds_a_bounded_number_of_bytes(ser):
    # Compressed payloads of large bodies: each costs its inflated size in the memo.
    for i in range(200):
        ser.loads(_compressed(ser, f"{i:04d}" + "z" * 60_000), key=KEY)
        memo = ser._verified
        assert memo.size <= serialization._VERIFIED_BYTES + 70_000
        assert len(memo.entries) < 200
