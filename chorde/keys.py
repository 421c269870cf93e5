"""Stable byte encoding of cache keys, for clients whose keys leave the process.

In-process clients use keys as they are; memcached, files and other shared backends need a
key that means the same thing in every process, on every machine and under every Python
version, so :func:`hash` (salted per process) is out. :func:`encode_key` maps a key to bytes
that are type-tagged and length-prefixed, hence unambiguous: ``1``, ``True``, ``1.0``,
``"1"`` and ``b"1"`` all differ, and ``("a", "b")`` differs from ``("ab",)``.

Encoding (each value is a one-byte tag followed by its content):

==========  ===  ==========================================================================
type        tag  content
==========  ===  ==========================================================================
str         s    UTF-8 (lone surrogates kept with ``surrogatepass``)
bytes       b    the bytes
int         i    decimal digits, ``-`` for negatives (ints of up to 2000 bits)
int         I    hexadecimal digits, ``-`` for negatives (larger ints, where the decimal
                 form could hit the interpreter's ``int_max_str_digits`` limit)
float       f    ``repr()``: shortest round-trip form, ``inf``, ``-inf``, ``nan``
True        T    (nothing)
False       F    (nothing)
None        N    (nothing)
tuple       (    each item as ``<decimal length>:<item encoding>``
frozenset   {    like a tuple, items sorted by their encoding so iteration order (which
                 depends on hashing) does not matter
==========  ===  ==========================================================================

Decisions worth knowing:

* ``-0.0`` and ``0.0`` encode differently. They compare equal, but a cached function may
  well answer differently for them (``math.copysign``, ``atan2``); at worst they take two
  entries, never a wrong one.
* Every NaN encodes as ``fnan``: the encoding is stable, even though NaN never equals itself.
* Subclasses of the supported types (``StrEnum``/``IntEnum`` members, named tuples) encode
  as their base value, which they compare equal to. Plain ``Enum`` members, lists, dicts,
  sets, bytearrays and other objects raise :class:`TypeError`: there is no stable, obviously
  right encoding for them. Convert them to a supported key first.

For memcached, :func:`memcache_key` turns a key into a server key: the readable encoding
itself when it is short and printable, otherwise a digest of it, after a prefix.
"""

from __future__ import annotations

import base64
import hashlib
import reprlib
from typing import Any, Final

__all__ = [
    "DIGEST_CHARS",
    "MEMCACHE_KEY_MAX",
    "decode_key",
    "encode_key",
    "key_digest",
    "memcache_key",
    "memcache_safe",
    "memoizable",
]

MEMCACHE_KEY_MAX: Final = 250
"""Longest key memcached accepts, in bytes (protocol.txt, "Keys")."""

_DIGEST_BYTES: Final = 24
DIGEST_CHARS: Final = 32
"""Length of :func:`key_digest` output: base64url of a 24-byte BLAKE2b digest, no padding."""

# A digest key is marked by this character right after the prefix. It is no encoding's tag,
# so a readable key and a digest key under the same prefix can never be the same string.
_DIGEST_MARK: Final = "#"

_MAX_DEPTH: Final = 64
_BIG_INT: Final = 1 << 2000
# Length prefixes of short items, precomputed: formatting them is a good part of the cost.
_LEN: Final = tuple(b"%d:" % n for n in range(256))
# Bytes allowed in a readable memcached key: printable ASCII without space.
_MEMCACHE_CHARS: Final = bytes(range(0x21, 0x7F))

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlevel = 3


class _Unencodable(Exception):
    """Internal: carries the element that could not be encoded, and why."""

    def __init__(self, element: Any, reason: str) -> None:
        super().__init__(element, reason)
        self.element = element
        self.reason = reason


def _short_repr(obj: Any) -> str:
    try:
        return _repr.repr(obj)
    except Exception:
        return f"<{type(obj).__qualname__} object>"


def _encode_str(s: str) -> bytes:
    try:
        return b"s" + s.encode()
    except UnicodeEncodeError:
        return b"s" + s.encode("utf-8", "surrogatepass")


def _encode_int(n: int) -> bytes:
    if -_BIG_INT < n < _BIG_INT:
        return b"i%d" % n
    return b"I%x" % n


def _encode_items(tag: bytes, encoded: list[bytes], _len: tuple[bytes, ...] = _LEN) -> bytes:
    parts = [tag]
    for item in encoded:
        size = len(item)
        parts.append(_len[size] if size < 256 else b"%d:" % size)
        parts.append(item)
    return b"".join(parts)


def _encode_tuple(
    obj: tuple[Any, ...], depth: int, _len: tuple[bytes, ...] = _LEN, _big: int = _BIG_INT
) -> bytes:
    if depth >= _MAX_DEPTH:
        raise _Unencodable(obj, f"nested more than {_MAX_DEPTH} levels deep")
    # The common items are inlined: this is the hot path of tuple keys.
    parts = [b"("]
    for item in obj:
        t = type(item)
        if t is str and item.isascii():
            encoded = b"s" + item.encode()
        elif t is int and -_big < item < _big:
            encoded = b"i%d" % item
        else:
            encoded = _encode(item, depth + 1)
        size = len(encoded)
        parts.append(_len[size] if size < 256 else b"%d:" % size)
        parts.append(encoded)
    return b"".join(parts)


def _encode(obj: Any, depth: int) -> bytes:
    t = type(obj)
    if t is str:
        return _encode_str(obj)
    if t is int:
        return _encode_int(obj)
    if t is tuple:
        return _encode_tuple(obj, depth)
    if t is bytes:
        encoded: bytes = b"b" + obj
        return encoded
    if obj is None:
        return b"N"
    if obj is True:
        return b"T"
    if obj is False:
        return b"F"
    if t is float:
        return b"f" + repr(obj).encode()
    if t is frozenset:
        if depth >= _MAX_DEPTH:
            raise _Unencodable(obj, f"nested more than {_MAX_DEPTH} levels deep")
        return _encode_items(b"{", sorted([_encode(item, depth + 1) for item in obj]))
    # Subclasses: take the base type's own view of the value, bypassing any override of
    # __str__, __iter__ and the like that could make the encoding unstable.
    if isinstance(obj, str):
        return _encode_str(str.__str__(obj))
    if isinstance(obj, int):
        return _encode_int(int.__int__(obj))
    if isinstance(obj, float):
        return _encode(float.__float__(obj), depth)
    if isinstance(obj, bytes):
        return b"b" + bytes.__bytes__(obj)
    if isinstance(obj, tuple):
        return _encode(tuple.__getitem__(obj, slice(None)), depth)
    if isinstance(obj, frozenset):
        return _encode(frozenset.copy(obj), depth)
    raise _Unencodable(obj, f"unsupported type {t.__qualname__}")


def encode_key(key: Any, _big: int = _BIG_INT) -> bytes:
    """Encode a key into stable, unambiguous bytes; ``TypeError`` names an unsupported key."""
    try:
        t = type(key)
        if t is str and key.isascii():
            encoded: bytes = b"s" + key.encode()
            return encoded
        if t is int and -_big < key < _big:
            return b"i%d" % key
        if t is tuple:
            return _encode_tuple(key, 0)
        return _encode(key, 0)
    except _Unencodable as exc:
        message = f"cannot encode cache key {_short_repr(key)}: {exc.reason}"
        if exc.element is not key:
            message += f" (element {_short_repr(exc.element)})"
        message += "; keys must be str, bytes, int, float, bool, None or tuples/frozensets of them"
        raise TypeError(message) from None


def memoizable(key: Any, _depth: int = 0) -> bool:
    """Whether every key equal to ``key`` encodes as it does, so that a memo of encodings
    may answer for it: a str, or a tuple of such (``1``, ``1.0`` and ``True`` are equal
    but encode apart). Nesting deeper than :func:`encode_key` allows is not."""
    kind = type(key)
    if kind is str:
        return True
    if kind is not tuple or _depth >= _MAX_DEPTH:
        return False
    for item in key:  # noqa: SIM110 (hot path: no generator)
        if not memoizable(item, _depth + 1):
            return False
    return True


def _decode(data: bytes) -> Any:
    tag = data[:1]
    content = data[1:]
    if tag == b"s":
        return content.decode("utf-8", "surrogatepass")
    if tag == b"b":
        return content
    if tag == b"i":
        return int(content)
    if tag == b"I":
        return int(content, 16)
    if tag == b"f":
        return float(content)
    if tag in (b"T", b"F", b"N") and not content:
        return {b"T": True, b"F": False, b"N": None}[tag]
    if tag in (b"(", b"{"):
        items = []
        pos = 0
        while pos < len(content):
            colon = content.index(b":", pos)
            end = colon + 1 + int(content[pos:colon])
            if end > len(content):
                raise ValueError("truncated item")
            items.append(_decode(content[colon + 1 : end]))
            pos = end
        return tuple(items) if tag == b"(" else frozenset(items)
    raise ValueError(f"unknown tag {tag!r}")


def decode_key(data: bytes) -> Any:
    """Invert :func:`encode_key` (subclasses come back as their base type); for debugging."""
    try:
        return _decode(bytes(data))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not an encoded key: {_short_repr(data)} ({exc})") from None


def key_digest(encoded: bytes) -> str:
    """A short ASCII digest of an encoded key (``DIGEST_CHARS`` base64url characters)."""
    digest = hashlib.blake2b(encoded, digest_size=_DIGEST_BYTES).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def memcache_safe(encoded: bytes) -> bool:
    """Whether ``encoded`` can be a memcached key as is: at most 250 printable ASCII bytes."""
    return len(encoded) <= MEMCACHE_KEY_MAX and not encoded.translate(None, _MEMCACHE_CHARS)


_checked_prefixes: set[str] = set()


def _check_prefix(prefix: str) -> None:
    if not isinstance(prefix, str):
        raise TypeError(f"memcached key prefix must be a str, got {_short_repr(prefix)}")
    raw = prefix.encode("ascii", "replace")
    if not prefix.isascii() or not memcache_safe(raw):
        raise ValueError(
            f"memcached key prefix {_short_repr(prefix)} must be printable ASCII "
            "without spaces or control characters"
        )
    if len(raw) + 1 + DIGEST_CHARS > MEMCACHE_KEY_MAX:
        raise ValueError(
            f"memcached key prefix {_short_repr(prefix)} is {len(raw)} characters long; "
            f"at most {MEMCACHE_KEY_MAX - 1 - DIGEST_CHARS} leave room for a key digest"
        )
    if len(_checked_prefixes) < 1024:
        _checked_prefixes.add(prefix)


def memcache_key(key: Any, prefix: str = "") -> tuple[str, bytes]:
    """Map a key to ``(memcached key, encoded key)``.

    The memcached key is ``prefix`` followed by the key's encoding when that is printable
    ASCII and the whole fits in 250 bytes (readable in ``stats cachedump`` and friends),
    else by ``#`` and :func:`key_digest` of the encoding. Distinct keys under one prefix
    give distinct readable keys; digests may in theory collide, so store the encoded key
    (the second item) with the value and treat a mismatch on read as a miss. Under
    different prefixes, keys may coincide only if the encoded keys differ, which that
    same check catches. ``ValueError`` names a prefix that is not printable ASCII or leaves
    no room for a digest.
    """
    if prefix not in _checked_prefixes:
        _check_prefix(prefix)
    encoded = encode_key(key)
    if len(prefix) + len(encoded) <= MEMCACHE_KEY_MAX and encoded.isascii():
        text = encoded.decode("ascii")
        if text.isprintable() and " " not in text:
            return prefix + text, encoded
    return prefix + _DIGEST_MARK + key_digest(encoded), encoded
