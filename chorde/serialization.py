"""Signed serialization of cached values for clients whose values leave the process.

Pipeline: :mod:`pickle` (highest protocol), then zlib compression of large values, then an
HMAC-SHA256 signature with a secret ``checksum_key``. :meth:`Serializer.loads` verifies the
signature BEFORE it decompresses or unpickles anything: unpickling runs arbitrary code, so a
shared cache (memcached, a directory) that anyone else can write to must never be able to
feed us a pickle we did not sign. **Keep checksum_key secret**: whoever knows it can make
every process that reads the cache execute code of their choosing.

Payload layout (integers big-endian)::

    offset  size  field
    0       2     magic b"\\xc4\\xde"
    2       1     format version (1)
    3       1     flags: bit 0 = body is zlib-compressed; other bits must be 0
    4       4     key id: first 4 bytes of HMAC-SHA256(checksum_key, b"chorde key id")
    8       4     length of the encoded cache key (K)
    12      8     expires: absolute time.time() as an IEEE 754 double
    20      8     size of the pickle (before compression)
    28      K     the encoded cache key (chorde.keys.encode_key)
    28+K    ...   body: the pickle, compressed when the flag says so
    end-32  32    HMAC-SHA256(checksum_key, everything above)

The key id only picks which of the configured keys to verify with, so key rotation costs
one HMAC per read, not one per configured key. The cache key is stored and signed so that a
value read under another key (two keys whose memcached digests collide, a file renamed) is
a miss rather than a wrong value.

A payload can also be bound to a *context* (:meth:`Serializer.bound`): the memcached client
binds every value to its namespace and the namespace's generation, so a value copied into
another namespace, or kept from before a ``clear()``, no longer verifies. The context is not
stored in the payload: it changes the signing key, so the layout above is the same.

Every way a payload can be bad raises :class:`InvalidPayload`; clients turn it into a miss,
count it in ``stats.errors`` and report it through :class:`RateLimitedLog`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import math
import pickle
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from chorde.errors import ChordeError, ConfigurationError

__all__ = ["FORMAT_VERSION", "InvalidPayload", "RateLimitedLog", "Serializer"]

FORMAT_VERSION: Final = 1

_MAGIC: Final = b"\xc4\xde"
_HEADER: Final = struct.Struct(">2sBB4sIdQ")
_HEADER_SIZE: Final = _HEADER.size
# The same header with magic, version and flags read as one field, for the fast path.
_unpack_fast_header: Final = struct.Struct(">4s4sIdQ").unpack_from
_TAG_SIZE: Final = 32
_FLAG_ZLIB: Final = 0x01
_KNOWN_FLAGS: Final = _FLAG_ZLIB
_KEY_ID_MESSAGE: Final = b"chorde key id"
_CONTEXT_MESSAGE: Final = b"chorde context\0"
_MAX_BOUND: Final = 256
_MAX_KEY_LEN: Final = 0xFFFFFFFF
# Magic, version and flags of an uncompressed payload.
_PLAIN_PREFIX: Final = _MAGIC + bytes((FORMAT_VERSION, 0))
_ZLIB_PREFIX: Final = _MAGIC + bytes((FORMAT_VERSION, _FLAG_ZLIB))
_compare_digest: Final = hmac.compare_digest
_unpickle: Final = pickle.loads
# Up to this size a bytes payload is verified and unpickled from copied slices: cheaper than
# memoryviews (pickle.loads of a view costs more than copying a small body).
_FAST_MAX: Final = 4096
# Payloads up to this size that verified are remembered with the pickle they hold (the body
# decompressed), so that reading the same bytes again skips the HMAC and the inflating, which
# cost more than unpickling a page-sized value: hashlib's OpenSSL contexts are copied and freed
# four times per HMAC, and zlib sets up a 32 KiB window per payload. Byte for byte the payload
# once verified. A read of bytes not remembered pays a lookup and an insert on top (0.4 us in
# the pure build, 10-20% of such a read, against 21 us saved per later read of a 2 KB page
# in a Flask app). Bodies over _VERIFIED_BODY are not kept; the lot is forgotten at
# _VERIFIED_MAX entries or _VERIFIED_BYTES bytes (payloads and bodies).
_VERIFIED_SIZE: Final = _FAST_MAX + 128  # (with a tag and a caller's header before it)
_VERIFIED_BODY: Final = 64 * 1024
_VERIFIED_MAX: Final = 2048
_VERIFIED_BYTES: Final = 4 * 1024 * 1024

# Compressing a large incompressible value (random bytes, JPEG, already-compressed data)
# costs tens of milliseconds per MiB for nothing, so bodies over _PROBE_MIN are first probed
# with three small chunks (start, middle, end) and sent as they are if those barely shrink.
_PROBE_MIN: Final = 128 * 1024
_PROBE_CHUNK: Final = 4 * 1024
_PROBE_RATIO: Final = 0.9

_NO_KEY_MESSAGE: Final = (
    "checksum_key is required: cached values cross a process boundary and are unpickled "
    "on the way back, so they must be signed with a secret key, or anyone able to write to "
    "the shared cache could execute code in this process"
)


def _inflate(body: bytes | memoryview, raw_len: int) -> bytes:
    """The compressed ``body`` of an authentic payload, inflated to its signed ``raw_len``.

    Bounded by that size, so even a bomb from a key holder stops there; an exact bound also
    lets zlib allocate the output once.
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, raw_len + 1)
    except zlib.error as exc:
        raise InvalidPayload(f"corrupt compressed body ({exc})") from None
    if len(out) != raw_len or not inflater.eof or inflater.unused_data:
        raise InvalidPayload("compressed body does not match its declared size")
    return out


class _Verified:
    """Payloads verified lately -> ``(serializer, offset, key, pickle, expires)``: what reading
    the same bytes again needs. Shared by a serializer and those bound from it (an entry names
    the one that verified it); forgotten all at once when full."""

    __slots__ = ("entries", "size")

    def __init__(self) -> None:
        self.entries: dict[bytes, tuple[Serializer, int, bytes, bytes, float]] = {}
        self.size = 0

    def remember(self, data: bytes, entry: tuple[Serializer, int, bytes, bytes, float]) -> None:
        if len(self.entries) >= _VERIFIED_MAX or self.size >= _VERIFIED_BYTES:
            self.entries.clear()
            self.size = 0
        self.entries[data] = entry
        self.size += len(data) + len(entry[3])


class _Mac:
    """HMAC-SHA256 under one key, with the key's inner and outer pads hashed once.

    Same result as :func:`hmac.digest` (RFC 2104), but each message costs two copies of
    pre-keyed hash states instead of re-deriving the pads: about twice as fast for the
    small payloads that dominate cache traffic.
    """

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, *parts: bytes | memoryview) -> bytes:
        inner = self.inner.copy()
        for part in parts:
            inner.update(part)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class InvalidPayload(ChordeError):
    """A cached payload failed verification or decoding; treat it as a miss."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key_bytes(key: Any, position: str) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    elif not isinstance(key, bytes):
        raise TypeError(
            f"checksum_key{position} must be str or bytes, got {type(key).__qualname__}"
        )
    if not key:
        raise ConfigurationError(f"checksum_key{position} is empty; {_NO_KEY_MESSAGE}")
    return bytes(key)


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigurationError(f"{name} must be {bounds}, got {value!r}")
    return value


def _looks_incompressible(body: bytes) -> bool:
    size = len(body)
    middle = size // 2
    probe = b"".join(
        (body[:_PROBE_CHUNK], body[middle : middle + _PROBE_CHUNK], body[-_PROBE_CHUNK:])
    )
    return len(zlib.compress(probe, 1)) > len(probe) * _PROBE_RATIO


class Serializer:
    """Pickle, compress and sign values; verify, decompress and unpickle payloads.

    ``checksum_key`` is a secret str/bytes, or a non-empty sequence of them to rotate keys:
    payloads are signed with the first and accepted when signed with any. To rotate, deploy
    ``[new, old]`` everywhere, then ``[new]`` once old entries have expired.

    Values whose pickle is at least ``compress_threshold`` bytes long are compressed with
    zlib at ``compress_level`` (1 by default: it gets most of the size reduction for a
    fraction of the CPU of higher levels, and both ends of every put and get pay that CPU),
    unless compression would not shrink them. ``max_size`` bounds the pickle's size, both
    when writing and, after decompression, when reading, which is what stops a zlib bomb.
    """

    __slots__ = (
        "_bound",
        "_compress",
        "_compress_level",
        "_compress_threshold",
        "_fast_keys",
        "_key_id",
        "_keys",
        "_max_size",
        "_signer",
        "_verified",
        "_verify_keys",
    )

    def __init__(
        self,
        checksum_key: str | bytes | Sequence[str | bytes],
        *,
        compress: bool = True,
        compress_threshold: int = 1024,
        compress_level: int = 1,
        max_size: int = 64 * 1024 * 1024,
    ) -> None:
        if checksum_key is None:
            raise ConfigurationError(_NO_KEY_MESSAGE)
        if isinstance(checksum_key, str | bytes):
            keys = [_key_bytes(checksum_key, "")]
        elif isinstance(checksum_key, Sequence):
            if not checksum_key:
                raise ConfigurationError(f"checksum_key is an empty sequence; {_NO_KEY_MESSAGE}")
            keys = [_key_bytes(key, f"[{i}]") for i, key in enumerate(checksum_key)]
        else:
            raise TypeError(
                "checksum_key must be str, bytes or a sequence of them (signing uses the "
                f"first), got {type(checksum_key).__qualname__}"
            )
        if not isinstance(compress, bool):
            raise TypeError(f"compress must be a bool, got {compress!r}")
        self._compress = compress
        self._compress_threshold = _check_int("compress_threshold", compress_threshold, 0)
        self._compress_level = _check_int("compress_level", compress_level, -1, 9)
        self._max_size = _check_int("max_size", max_size, 1)

        pairs: list[tuple[bytes, bytes]] = []
        for key in keys:
            if all(key != known for _, known in pairs):
                pairs.append((hmac.digest(key, _KEY_ID_MESSAGE, "sha256")[:4], key))
        self._bound: dict[bytes, Serializer] = {}
        self._verified = _Verified()
        self._install_keys(pairs)

    def _install_keys(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Sign with the first ``(key id, secret)``, verify with any of them."""
        self._keys = pairs
        self._verify_keys: dict[bytes, list[_Mac]] = {}
        for key_id, key in pairs:
            self._verify_keys.setdefault(key_id, []).append(_Mac(key))
        self._key_id = pairs[0][0]
        self._signer = _Mac(pairs[0][1])
        # The same keys as (inner, outer) pairs of pre-keyed states, for the fast path.
        self._fast_keys = {
            key_id: tuple((mac.inner, mac.outer) for mac in macs)
            for key_id, macs in self._verify_keys.items()
        }

    def bound(self, context: bytes) -> Serializer:
        """This serializer, its keys bound to ``context``: what either signs, only the other
        verifies, and only under the same ``context``.

        Each secret is replaced by ``HMAC-SHA256(secret, "chorde context" + context)`` (the
        key ids stay, so rotation works alike), so binding costs nothing per payload and
        nothing is added to it. A client binds what a payload means besides its key (a
        namespace, a generation): a payload copied into another context is a bad signature.
        Bound serializers are kept (a few hundred contexts at the most).
        """
        if type(context) is not bytes:
            raise TypeError(f"context must be bytes, got {type(context).__qualname__}")
        cache = self._bound
        bound = cache.get(context)
        if bound is None:
            bound = Serializer.__new__(Serializer)
            bound._compress = self._compress
            bound._compress_level = self._compress_level
            bound._compress_threshold = self._compress_threshold
            bound._max_size = self._max_size
            bound._bound = {}
            bound._verified = self._verified
            message = _CONTEXT_MESSAGE + context
            bound._install_keys(
                [(key_id, hmac.digest(key, message, "sha256")) for key_id, key in self._keys]
            )
            if len(cache) >= _MAX_BOUND:
                cache.clear()
            cache[context] = bound
        return bound

    def __repr__(self) -> str:
        return (
            f"Serializer(<{sum(map(len, self._verify_keys.values()))} key(s)>, "
            f"compress={self._compress}, compress_threshold={self._compress_threshold}, "
            f"compress_level={self._compress_level}, max_size={self._max_size})"
        )

    @property
    def key_id(self) -> bytes:
        """The 4-byte id of the signing key (the first ``checksum_key``), as payloads carry
        it: not secret, it names the key."""
        return self._key_id

    @property
    def max_size(self) -> int:
        """Largest pickle accepted, in bytes, before compression."""
        return self._max_size

    def dumps(self, value: Any, *, key: bytes = b"", expires: float = 0.0) -> bytes:
        """Serialize and sign ``value`` for the encoded cache ``key``.

        ``expires`` (absolute ``time.time()``, or 0.0 for "not set") is signed along. Raises
        what pickle raises for unpicklable values, and ``ValueError`` when the pickle is
        larger than ``max_size``.
        """
        if type(key) is not bytes:
            raise TypeError(f"key must be the encoded key as bytes, got {type(key).__qualname__}")
        if type(expires) is not float:
            if isinstance(expires, bool) or not isinstance(expires, int | float):
                raise TypeError(f"expires must be a number (time.time()), got {expires!r}")
            expires = float(expires)
        if math.isnan(expires):
            raise ValueError("expires must not be NaN")
        if len(key) > _MAX_KEY_LEN:
            raise ValueError(f"encoded key is {len(key)} bytes long, at most {_MAX_KEY_LEN}")

        body = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        size = len(body)
        if size > self._max_size:
            raise ValueError(
                f"value pickles to {size} bytes, more than max_size={self._max_size}; "
                "it could not be read back"
            )
        flags = 0
        if (
            self._compress
            and size >= self._compress_threshold
            and not (size > _PROBE_MIN and _looks_incompressible(body))
        ):
            compressed = zlib.compress(body, self._compress_level)
            if len(compressed) < size:
                body = compressed
                flags = _FLAG_ZLIB

        header = _HEADER.pack(_MAGIC, FORMAT_VERSION, flags, self._key_id, len(key), expires, size)
        return b"".join((header, key, body, self._signer.digest(header, key, body)))

    def loads(self, data: bytes, *, key: bytes = b"", offset: int = 0) -> tuple[Any, float]:
        """Verify and deserialize a payload made for ``key``: ``(value, expires)``.

        The payload is ``data[offset:]`` (``offset`` spares the caller a copy when the
        payload follows a header of its own). Raises :class:`InvalidPayload` for anything
        wrong with it; nothing in it is decompressed or unpickled before its signature
        checks out.
        """
        if type(key) is not bytes:
            raise TypeError(f"key must be the encoded key as bytes, got {type(key).__qualname__}")
        # Fast path: a small, uncompressed bytes payload that verifies, with few calls and no
        # memoryview. Anything else, including every invalid payload, takes the full path
        # (_loads), which checks the same things and says what is wrong.
        if type(data) is bytes and type(offset) is int and offset >= 0:
            size = len(data)
            signed_end = size - _TAG_SIZE
            if _HEADER_SIZE <= signed_end - offset <= _FAST_MAX:
                # These very bytes verified before, by this serializer, for this key.
                seen = self._verified.entries.get(data) if size <= _VERIFIED_SIZE else None
                if seen is not None and seen[0] is self and seen[1] == offset and seen[2] == key:
                    try:
                        return _unpickle(seen[3]), seen[4]
                    except Exception as exc:
                        raise InvalidPayload(
                            f"unpickling failed: {type(exc).__name__}: {exc}"
                        ) from None
                prefix, key_id, key_len, expires, raw_len = _unpack_fast_header(data, offset)
                body_start = offset + _HEADER_SIZE + key_len
                pairs = self._fast_keys.get(key_id)
                if (
                    (
                        signed_end - body_start == raw_len
                        if prefix == _PLAIN_PREFIX
                        else prefix == _ZLIB_PREFIX and body_start <= signed_end
                    )
                    and pairs is not None
                    and raw_len <= self._max_size
                    and data[offset + _HEADER_SIZE : body_start] == key
                ):
                    signed = data[offset:signed_end]
                    for inner_state, outer_state in pairs:
                        inner = inner_state.copy()
                        inner.update(signed)
                        outer = outer_state.copy()
                        outer.update(inner.digest())
                        if _compare_digest(outer.digest(), data[signed_end:]):
                            # Authentic: inflated and unpickled here, once, whatever happens.
                            body = data[body_start:signed_end]
                            if prefix == _ZLIB_PREFIX:
                                body = _inflate(body, raw_len)
                            if size <= _VERIFIED_SIZE and raw_len <= _VERIFIED_BODY:
                                self._verified.remember(data, (self, offset, key, body, expires))
                            try:
                                return _unpickle(body), expires
                            except Exception as exc:
                                raise InvalidPayload(
                                    f"unpickling failed: {type(exc).__name__}: {exc}"
                                ) from None
        return self._loads(data, key, offset)

    def _loads(self, data: Any, key: bytes, offset: int) -> tuple[Any, float]:
        """:meth:`loads` for any payload: every check, each failure named."""
        if type(offset) is not int or offset < 0:
            raise TypeError(f"offset must be an int >= 0, got {offset!r}")
        if type(data) is not bytes or offset:
            try:
                data = memoryview(data).cast("B")[offset:]
            except TypeError:
                raise InvalidPayload(f"payload is {type(data).__qualname__}, not bytes") from None
        size = len(data)
        if size < _HEADER_SIZE + _TAG_SIZE:
            if data[:2] != _MAGIC[: min(size, 2)]:
                raise InvalidPayload("not a chorde payload (foreign format)")
            raise InvalidPayload(f"truncated payload ({size} bytes)")
        magic, version, flags, key_id, key_len, expires, raw_len = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise InvalidPayload("not a chorde payload (foreign format)")
        if version != FORMAT_VERSION:
            raise InvalidPayload(f"unsupported payload format version {version}")
        if flags & ~_KNOWN_FLAGS:
            raise InvalidPayload(f"unknown payload flags {flags:#04x}")
        body_start = _HEADER_SIZE + key_len
        signed_end = size - _TAG_SIZE
        if body_start > signed_end:
            raise InvalidPayload(f"truncated payload ({size} bytes)")
        # Cheap, and a mismatch is a miss whether or not the payload is authentic.
        if data[_HEADER_SIZE:body_start] != key:
            raise InvalidPayload("payload belongs to another key")
        candidates = self._verify_keys.get(key_id)
        if candidates is None:
            raise InvalidPayload("payload signed with an unknown checksum_key")
        view = memoryview(data)
        signed = view[:signed_end]
        tag = data[signed_end:]
        for candidate in candidates:
            if hmac.compare_digest(candidate.digest(signed), tag):
                break
        else:
            raise InvalidPayload("bad signature")

        # Authentic from here on. The size limits still matter: the writer may have been
        # configured with a larger max_size than ours.
        if raw_len > self._max_size:
            raise InvalidPayload(f"body of {raw_len} bytes over max_size={self._max_size}")
        body: Any = view[body_start:signed_end]
        if flags & _FLAG_ZLIB:
            body = _inflate(body, raw_len)
        elif len(body) != raw_len:
            raise InvalidPayload("body does not match its declared size")
        try:
            value = pickle.loads(body)
        except Exception as exc:
            raise InvalidPayload(f"unpickling failed: {type(exc).__name__}: {exc}") from None
        return value, expires


class RateLimitedLog:
    """Log each kind of message at most once per ``interval`` seconds, counting the rest.

    The kind defaults to the message format string, so ``log.warning("bad payload for
    %r", key)`` is one kind whatever the key. The next message of a kind that gets through
    says how many were suppressed since the previous one.
    """

    _MAX_KINDS: Final = 1024

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise TypeError(f"interval must be a number of seconds, got {interval!r}")
        if not interval >= 0:
            raise ConfigurationError(f"interval must be >= 0, got {interval!r}")
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[str, list[Any]] = {}  # kind -> [last emitted at, suppressed since]
        self.suppressed = 0
        """Messages suppressed so far, all kinds together."""

    def log(self, level: int, msg: str, *args: Any, kind: str | None = None) -> bool:
        """Log ``msg % args`` at ``level`` unless its kind was logged recently; True if logged."""
        if not self.logger.isEnabledFor(level):
            return False
        kind = msg if kind is None else kind
        now = self._clock()
        with self._lock:
            state = self._kinds.get(kind)
            if state is not None and now - state[0] < self.interval:
                state[1] += 1
                self.suppressed += 1
                return False
            if state is None:
                if len(self._kinds) >= self._MAX_KINDS:
                    self._forget_old(now)
                state = [now, 0]
            else:
                # Re-inserted so the dict stays ordered by last emission, oldest first.
                del self._kinds[kind]
            self._kinds[kind] = state
            skipped, state[0], state[1] = state[1], now, 0
        if skipped:
            if not args:
                msg = msg.replace("%", "%%")
            msg += " (%d similar suppressed)"
            args = (*args, skipped)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: Any, kind: str | None = None) -> bool:
        """:meth:`log` at WARNING level."""
        return self.log(logging.WARNING, msg, *args, kind=kind)

    def error(self, msg: str, *args: Any, kind: str | None = None) -> bool:
        """:meth:`log` at ERROR level."""
        return self.log(logging.ERROR, msg, *args, kind=kind)

    def _forget_old(self, now: float) -> None:
        kinds = self._kinds
        for kind in [k for k, (at, _) in kinds.items() if now - at >= self.interval]:
            del kinds[kind]
        if len(kinds) >= self._MAX_KINDS:
            # All recent: forget the least recently logged eighth.
            for kind in list(itertools.islice(kinds, self._MAX_KINDS // 8)):
                del kinds[kind]
