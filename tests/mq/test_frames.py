"""Signed frames: round trip, and every kind of bad frame rejected before parsing."""

from __future__ import annotations

import hmac

import pytest

from chorde.errors import ConfigurationError
from chorde.mq.frames import (
    FRAME_VERSION,
    MAX_FRAME,
    Frames,
    InvalidFrame,
    MessageType,
    UnsupportedVersion,
    decode_summary,
    encode_summary,
)
from tests.mq import _frames_v1

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


# ---- format versions ---------------------------------------------------------------------


def _resigned(frames_secret: bytes, frame: bytes, version: int) -> bytes:
    """``frame`` with another version byte, signed again (a trusted peer's frame)."""
    body = bytearray(frame[:-32])
    body[2] = version
    return bytes(body) + hmac.digest(frames_secret, bytes(body), "sha256")


def test_frames_name_their_format():
    frames = Frames("s")
    assert FRAME_VERSION == 2
    data = frames.encode(MessageType.WAKE, SENDER, 3, "c", [b"k"])
    assert data[2] == 2
    assert frames.decode(data).version == 2


def test_format_1_is_still_read_and_written():
    frames = Frames("s")
    old = frames.encode(MessageType.INVALIDATE, SENDER, 9, "c", [b"k"], version=1)
    msg = frames.decode(old)
    assert (msg.version, msg.seq, msg.items) == (1, 9, (b"k",))
    # What the format-1 code itself makes of it, and what we make of its frames.
    assert _frames_v1.Frames("s").decode(old).items == (b"k",)
    theirs = _frames_v1.Frames("s").encode(MessageType.CLEAR, SENDER, 4, "c")
    assert frames.decode(theirs).version == 1
    with pytest.raises(_frames_v1.InvalidFrame, match="version 2"):
        _frames_v1.Frames("s").decode(frames.encode(MessageType.CLEAR, SENDER, 1, "c"))


def test_a_newer_format_is_rejected_but_its_sender_is_known():
    frames = Frames("s")
    newer = _resigned(b"s", frames.encode(MessageType.INVALIDATE, SENDER, 1, "c", [b"k"]), 3)
    with pytest.raises(UnsupportedVersion) as info:
        frames.decode(newer)
    assert (info.value.version, info.value.sender) == (3, SENDER)
    # Only after the signature: a forged "newer" frame is plain garbage.
    with pytest.raises(InvalidFrame, match="signature"):
        Frames("other").decode(newer)
    older = _resigned(b"s", frames.encode(MessageType.INVALIDATE, SENDER, 1, "c"), 0)
    with pytest.raises(InvalidFrame, match="unknown frame version 0"):
        frames.decode(older)
    with pytest.raises(ValueError, match="version"):
        frames.encode(MessageType.CLEAR, SENDER, 1, "c", version=3)


def test_summary_round_trip():
    last = {"app": 12, "é": 2**40, "": 1}
    assert decode_summary(encode_summary(last)) == last
    assert decode_summary([]) == {}
    with pytest.raises(InvalidFrame, match="truncated"):
        decode_summary([b"\x00" * 7])
    with pytest.raises(InvalidFrame, match="UTF-8"):
        decode_summary([b"\x00" * 8 + b"\xff"])
