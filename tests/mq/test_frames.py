"""Signed frames: round trip, and every kind of bad frame rejected before parsing."""

from __future__ import annotations

import pytest

from chorde.errors import ConfigurationError
from chorde.mq.frames import MAX_FRAME, Frames, InvalidFrame, MessageType

SENDER = b"\x01" * 8


def test_round_trip():
    frames = Frames("secret")
    data = frames.encode(MessageType.INVALIDATE, SENDER, 7, "chan é", [b"a", b"", b"\x00" * 300])
    msg = frames.decode(data)
    assert msg.type is MessageType.INVALIDATE
    assert (msg.sender, msg.seq, msg.channel) == (SENDER, 7, "chan é")
    assert msg.items == (b"a", b"", b"\x00" * 300)
    assert msg.sent > 0


def test_wrong_secret_is_rejected():
    data = Frames("one").encode(MessageType.CLEAR, SENDER, 1, "c")
    with pytest.raises(InvalidFrame, match="signature"):
        Frames("two").decode(data)


def test_key_rotation_accepts_old_secret():
    old = Frames("old").encode(MessageType.WAKE, SENDER, 1, "c", [b"k"])
    assert Frames(["new", "old"]).decode(old).items == (b"k",)
    new = Frames(["new", "old"]).encode(MessageType.WAKE, SENDER, 1, "c", [b"k"])
    with pytest.raises(InvalidFrame):
        Frames("old").decode(new)


@pytest.mark.parametrize("position", [0, 2, 3, 5, 20, 40, -1])
def test_any_flipped_byte_is_rejected(position):
    frames = Frames("s")
    data = bytearray(frames.encode(MessageType.INVALIDATE, SENDER, 1, "chan", [b"key"]))
    data[position] ^= 0x01
    with pytest.raises(InvalidFrame):
        frames.decode(bytes(data))


@pytest.mark.parametrize("cut", [1, 10, 33, 60])
def test_truncated_frames_are_rejected(cut):
    frames = Frames("s")
    data = frames.encode(MessageType.INVALIDATE, SENDER, 1, "chan", [b"key"])
    with pytest.raises(InvalidFrame):
        frames.decode(data[:-cut])


def test_garbage_is_rejected():
    with pytest.raises(InvalidFrame):
        Frames("s").decode(b"")
    with pytest.raises(InvalidFrame, match="magic"):
        Frames("s").decode(b"x" * 100)


def test_batches_fit_in_frames():
    frames = Frames("s")
    items = [bytes([i % 256]) * 1000 for i in range(600)]
    batches = list(frames.batches(items, "c"))
    assert len(batches) > 1
    assert [x for b in batches for x in b] == items
    for batch in batches:
        assert len(frames.encode(MessageType.INVALIDATE, SENDER, 1, "c", batch)) <= MAX_FRAME
    with pytest.raises(ValueError, match="cannot fit"):
        list(frames.batches([b"x" * MAX_FRAME]))
    with pytest.raises(ValueError, match="exceeds"):
        frames.encode(MessageType.INVALIDATE, SENDER, 1, "c", [b"x" * MAX_FRAME])


@pytest.mark.parametrize("secret", [None, "", [], [b""], [1]])
def test_a_secret_is_required(secret):
    with pytest.raises(ConfigurationError, match="secret"):
        Frames(secret)
