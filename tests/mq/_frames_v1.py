# chorde.mq.frames as it was in frame format 1 (commit fe2cbbe), kept verbatim so that tests
# can play an old process in a rolling upgrade. Do not edit.
# ruff: noqa
# fmt: off
"""Signed binary frames: the only thing chorde's cluster messages are made of.

Cluster messages carry keys, never values, so they need no pickle: a frame is a fixed
header, a channel name and a list of byte strings (keys encoded with
:func:`chorde.keys.encode_key`), followed by an HMAC-SHA256 of everything before it. The
signature is checked before any field is parsed; a frame that fails it is dropped.

Layout (integers big-endian)::

    offset  size  field
    0       2     magic b"\\xc4\\x6d"
    2       1     format version (1)
    3       1     message type (MessageType)
    4       8     sender: the publishing bus's random peer id
    12      8     sequence number, per sender
    20      8     send time, time.time() as an IEEE 754 double (informative)
    28      2     channel length C
    30      C     channel, UTF-8
    30+C    4     item count N
    ...           N times: 4-byte length L, then L bytes
    end-32  32    HMAC-SHA256(secret, everything above)
"""

from __future__ import annotations

import enum
import hmac
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from chorde.errors import ChordeError, ConfigurationError

__all__ = [
    "FRAME_VERSION",
    "MAX_FRAME",
    "Frames",
    "InvalidFrame",
    "Message",
    "MessageType",
]

FRAME_VERSION: Final = 1
#: Largest frame a bus sends or accepts; batches of keys are split to fit.
MAX_FRAME: Final = 256 * 1024

_MAGIC: Final = b"\xc4\x6d"
_HEADER: Final = struct.Struct(">2sBB8sQdH")
_COUNT: Final = struct.Struct(">I")
_LEN: Final = struct.Struct(">I")
_TAG: Final = 32
_MIN_FRAME: Final = _HEADER.size + _COUNT.size + _TAG


class MessageType(enum.IntEnum):
    """What a frame asks its receivers to do."""

    #: Liveness only: "I am here".
    HEARTBEAT = 1
    #: Drop your private copies of these keys (a put, delete, expire happened).
    INVALIDATE = 2
    #: Drop every private copy on this channel (a clear, or too many keys to list).
    CLEAR = 3
    #: Look again at these keys (a computation ended without storing a value).
    WAKE = 4
    #: The sender is leaving: consider it dead now.
    BYE = 5


class InvalidFrame(ChordeError):
    """A frame failed verification or parsing; it is dropped."""


@dataclass(frozen=True, slots=True)
class Message:
    """A verified, decoded frame."""

    type: MessageType
    sender: bytes
    seq: int
    sent: float
    channel: str
    items: tuple[bytes, ...]


def _secret_list(secret: Any) -> list[bytes]:
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret or ())
    out = []
    for i, s in enumerate(secrets):
        if isinstance(s, str):
            s = s.encode()
        if not isinstance(s, bytes):
            raise ConfigurationError(f"secret #{i} must be str or bytes, got {type(s).__name__}")
        if not s:
            raise ConfigurationError(f"secret #{i} is empty")
        out.append(s)
    if not out:
        raise ConfigurationError(
            "secret is required: cluster messages are HMAC-signed so that nobody who can "
            "reach the bus can forge invalidations; pass the same secret to every process"
        )
    return out


class Frames:
    """Encode and verify frames with a secret (or several: sign with the first, accept any)."""

    __slots__ = ("_accept", "_sign")

    def __init__(self, secret: str | bytes | Sequence[str | bytes]) -> None:
        secrets = _secret_list(secret)
        self._sign = secrets[0]
        self._accept = tuple(secrets)

    def encode(
        self,
        mtype: MessageType,
        sender: bytes,
        seq: int,
        channel: str = "",
        items: Sequence[bytes] = (),
        sent: float | None = None,
    ) -> bytes:
        """One signed frame; ``ValueError`` if it would exceed :data:`MAX_FRAME`."""
        if len(sender) != 8:
            raise ValueError(f"sender must be 8 bytes, got {sender!r}")
        chan = channel.encode()
        if len(chan) > 0xFFFF:
            raise ValueError(f"channel name too long: {channel[:40]!r}...")
        parts = [
            _HEADER.pack(
                _MAGIC,
                FRAME_VERSION,
                int(mtype),
                sender,
                seq,
                time.time() if sent is None else sent,
                len(chan),
            ),
            chan,
            _COUNT.pack(len(items)),
        ]
        for item in items:
            parts.append(_LEN.pack(len(item)))
            parts.append(item)
        body = b"".join(parts)
        if len(body) + _TAG > MAX_FRAME:
            raise ValueError(f"frame of {len(body) + _TAG} bytes exceeds {MAX_FRAME}")
        return body + hmac.digest(self._sign, body, "sha256")

    def batches(self, items: Sequence[bytes], channel: str = "") -> Iterator[list[bytes]]:
        """Split ``items`` into lists that each fit in one frame (an item too big: ValueError)."""
        room = MAX_FRAME - _MIN_FRAME - len(channel.encode())
        batch: list[bytes] = []
        used = 0
        for item in items:
            size = len(item) + _LEN.size
            if size > room:
                raise ValueError(f"item of {len(item)} bytes cannot fit in a frame")
            if used + size > room:
                yield batch
                batch, used = [], 0
            batch.append(item)
            used += size
        if batch:
            yield batch

    def decode(self, frame: bytes) -> Message:
        """Verify then parse ``frame``; :class:`InvalidFrame` says why it was rejected."""
        if len(frame) < _MIN_FRAME or len(frame) > MAX_FRAME:
            raise InvalidFrame(f"frame of {len(frame)} bytes")
        if frame[:2] != _MAGIC:
            raise InvalidFrame("not a chorde frame (bad magic)")
        body, tag = frame[:-_TAG], frame[-_TAG:]
        for secret in self._accept:
            if hmac.compare_digest(hmac.digest(secret, body, "sha256"), tag):
                break
        else:
            raise InvalidFrame("bad signature (wrong secret, or tampered with)")
        _, version, mtype, sender, seq, sent, clen = _HEADER.unpack_from(body)
        if version != FRAME_VERSION:
            raise InvalidFrame(f"unsupported frame version {version}")
        try:
            kind = MessageType(mtype)
        except ValueError:
            raise InvalidFrame(f"unknown message type {mtype}") from None
        pos = _HEADER.size
        end = pos + clen
        if end + _COUNT.size > len(body):
            raise InvalidFrame("truncated channel")
        try:
            channel = body[pos:end].decode()
        except UnicodeDecodeError:
            raise InvalidFrame("channel is not UTF-8") from None
        (count,) = _COUNT.unpack_from(body, end)
        pos = end + _COUNT.size
        items = []
        for _ in range(count):
            if pos + _LEN.size > len(body):
                raise InvalidFrame("truncated item list")
            (size,) = _LEN.unpack_from(body, pos)
            pos += _LEN.size
            if pos + size > len(body):
                raise InvalidFrame("truncated item")
            items.append(body[pos : pos + size])
            pos += size
        if pos != len(body):
            raise InvalidFrame("trailing bytes after the items")
        return Message(kind, sender, seq, sent, channel, tuple(items))
