"""Tests for chorde.serialization: signed pickles, verified before anything is unpickled."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import pickle
import struct
import threading
import tracemalloc
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chorde.errors import ChordeError, ConfigurationError
from chorde.sentinel import NONE
from chorde.serialization import FORMAT_VERSION, InvalidPayload, RateLimitedLog, Serializer

KEY = b"sapp:user:42"
HEADER = struct.Struct(">2sBB4sIdQ")  # the documented layout, pinned here on purpose
MAGIC = b"\xc4\xde"


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)


class WritesMarker:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (str(self.path), "w"))


def _key_id(secret: bytes) -> bytes:
    return hmac.digest(secret, b"chorde key id", "sha256")[:4]


def _forge(
    secret: bytes,
    body: bytes,
    *,
    key: bytes = KEY,
    flags: int = 0,
    raw_len: int | None = None,
    version: int = FORMAT_VERSION,
    expires: float = 0.0,
) -> bytes:
    """A payload built and signed by hand, as a key holder (or a future version) could."""
    size = len(body) if raw_len is None else raw_len
    header = HEADER.pack(MAGIC, version, flags, _key_id(secret), len(key), expires, size)
    signed = header + key + body
    return signed + hmac.digest(secret, signed, "sha256")


@pytest.fixture
def ser() -> Serializer:
    return Serializer("s3cret")


# ---- round trips ------------------------------------------------------------------------

VALUES = [
    None,
    0,
    "",
    b"",
    "text é ✓",
    12345678901234567890,
    math.inf,
    (1, "two", 3.0, None),
    {"a": [1, 2, {"b": (3, frozenset({4}))}], "c": b"\x00" * 10},
    Node("root", [Node("leaf", meta={"x": 1})], {"y": [Node("deep")]}),
    b"z" * 100_000,
    os.urandom(300_000),
    list(range(50_000)),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip(ser: Serializer, value: object) -> None:
    payload = ser.dumps(value, key=KEY, expires=1_700_000_000.25)
    assert type(payload) is bytes
    loaded, expires = ser.loads(payload, key=KEY)
    assert loaded == value
    assert type(loaded) is type(value)
    assert expires == 1_700_000_000.25


def test_none_sentinel_survives(ser: Serializer) -> None:
    loaded, _ = ser.loads(ser.dumps(NONE))
    assert loaded is NONE
    loaded, _ = ser.loads(ser.dumps([NONE, None]))
    assert loaded[0] is NONE and loaded[1] is None


@pytest.mark.parametrize("expires", [0.0, 0, 1, 1e9, math.inf, -5.5])
def test_expires_round_trips(ser: Serializer, expires: float) -> None:
    assert ser.loads(ser.dumps("v", expires=expires)) == ("v", float(expires))


def test_accepts_bytes_like_payloads(ser: Serializer) -> None:
    payload = ser.dumps({"k": 1}, key=KEY)
    assert ser.loads(bytearray(payload), key=KEY)[0] == {"k": 1}
    assert ser.loads(memoryview(payload), key=KEY)[0] == {"k": 1}
    padded = memoryview(b"xxxx" + payload)[4:]
    assert ser.loads(padded, key=KEY)[0] == {"k": 1}


def _flags(payload: bytes) -> int:
    return payload[3]


def test_compression_threshold_and_skip() -> None:
    ser = Serializer("k", compress_threshold=1000)
    compressible = "a" * 5000
    payload = ser.dumps(compressible)
    assert _flags(payload) == 1
    assert len(payload) < 1000
    # Below the threshold: stored as is, even though it would compress.
    small = "a" * 900
    assert _flags(ser.dumps(small)) == 0
    # Incompressible: compression skipped, both under and over the sampling size.
    for size in (5000, 1_000_000):
        noise = os.urandom(size)
        payload = ser.dumps(noise)
        assert _flags(payload) == 0
        assert ser.loads(payload) == (noise, 0.0)
    # Mostly incompressible with a compressible middle still compresses if it pays.
    mixed = os.urandom(100_000) + b"\x00" * 2_000_000 + os.urandom(100_000)
    payload = ser.dumps(mixed)
    assert _flags(payload) == 1
    assert ser.loads(payload)[0] == mixed
    # Disabled compression and threshold 0.
    assert _flags(Serializer("k", compress=False).dumps(compressible)) == 0
    assert _flags(Serializer("k", compress_threshold=0).dumps("aaaaaaaaaaaaaaaaaaaaaaaaa")) == 1


def test_compress_level_is_used() -> None:
    value = " ".join(str(i * 7919 % 10007) for i in range(50_000))
    fast = Serializer("k", compress_level=1).dumps(value)
    best = Serializer("k", compress_level=9).dumps(value)
    assert len(best) < len(fast)
    assert Serializer("k").loads(best)[0] == value


# ---- every bad payload is InvalidPayload ------------------------------------------------


def test_invalid_payload_is_a_chorde_error() -> None:
    assert issubclass(InvalidPayload, ChordeError)
    assert InvalidPayload("why").reason == "why"


def _payloads(ser: Serializer) -> dict[str, bytes]:
    return {
        "small": ser.dumps({"a": 1, "b": [2, 3]}, key=KEY, expires=123.0),
        "compressed": ser.dumps("abc" * 1000, key=KEY, expires=123.0),
    }


@pytest.mark.parametrize("kind", ["small", "compressed"])
def test_any_flipped_bit_is_rejected(ser: Serializer, kind: str) -> None:
    payload = _payloads(ser)[kind]
    assert ser.loads(payload, key=KEY)[1] == 123.0
    assert len(payload) < 400  # every bit of it below, bounded
    for position in range(len(payload)):
        for bit in range(8):
            tampered = bytearray(payload)
            tampered[position] ^= 1 << bit
            with pytest.raises(InvalidPayload):
                ser.loads(bytes(tampered), key=KEY)


def test_flipped_bits_in_a_large_payload_are_rejected(ser: Serializer) -> None:
    payload = ser.dumps(os.urandom(200_000), key=KEY)
    for position in range(0, len(payload), 9973):
        tampered = bytearray(payload)
        tampered[position] ^= 0x10
        with pytest.raises(InvalidPayload):
            ser.loads(bytes(tampered), key=KEY)


@pytest.mark.parametrize("kind", ["small", "compressed"])
def test_every_truncation_is_rejected(ser: Serializer, kind: str) -> None:
    payload = _payloads(ser)[kind]
    for length in range(len(payload)):
        with pytest.raises(InvalidPayload):
            ser.loads(payload[:length], key=KEY)
    with pytest.raises(InvalidPayload, match="bad signature"):
        ser.loads(payload + b"\x00", key=KEY)


def test_unknown_signing_key_is_rejected(ser: Serializer) -> None:
    foreign = Serializer("not-the-secret").dumps("value", key=KEY)
    with pytest.raises(InvalidPayload, match="unknown checksum_key"):
        ser.loads(foreign, key=KEY)


def test_forged_key_id_still_needs_the_signature(ser: Serializer) -> None:
    # A writer that knows our key id but not our key gets no further than the HMAC.
    payload = bytearray(Serializer("other").dumps("value", key=KEY))
    payload[4:8] = _key_id(b"s3cret")
    with pytest.raises(InvalidPayload, match="bad signature"):
        ser.loads(bytes(payload), key=KEY)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc4",
        b"hello world, this is not a chorde payload at all, no sir",
        pickle.dumps({"a": 1}),
        zlib.compress(pickle.dumps("x" * 100)),
        b"\x00" * 100,
        "a str, not bytes",
        None,
        12345,
    ],
    ids=repr,
)
def test_foreign_formats_are_rejected(ser: Serializer, data: object) -> None:
    with pytest.raises(InvalidPayload):
        ser.loads(data, key=b"")  # type: ignore[arg-type]


def test_key_mismatch_is_rejected(ser: Serializer) -> None:
    payload = ser.dumps("value", key=b"sone")
    with pytest.raises(InvalidPayload, match="another key"):
        ser.loads(payload, key=b"stwo")
    with pytest.raises(InvalidPayload, match="another key"):
        ser.loads(payload)
    with pytest.raises(InvalidPayload, match="another key"):
        ser.loads(ser.dumps("value"), key=b"sone")
    assert ser.loads(payload, key=b"sone")[0] == "value"


def test_unsupported_version_and_flags_are_rejected(ser: Serializer) -> None:
    body = pickle.dumps("v")
    assert ser.loads(_forge(b"s3cret", body), key=KEY)[0] == "v"
    with pytest.raises(InvalidPayload, match="version 2"):
        ser.loads(_forge(b"s3cret", body, version=2), key=KEY)
    with pytest.raises(InvalidPayload, match="flags"):
        ser.loads(_forge(b"s3cret", body, flags=0x02), key=KEY)


def test_signed_corrupt_bodies_are_rejected(ser: Serializer) -> None:
    with pytest.raises(InvalidPayload, match="unpickling failed"):
        ser.loads(_forge(b"s3cret", b"\x80\x05cno_such_module_here\nThing\n."), key=KEY)
    with pytest.raises(InvalidPayload, match="unpickling failed"):
        ser.loads(_forge(b"s3cret", b"\x80\x05garbage"), key=KEY)
    with pytest.raises(InvalidPayload, match="corrupt compressed"):
        ser.loads(_forge(b"s3cret", b"not zlib at all", flags=1, raw_len=10), key=KEY)
    squeezed = zlib.compress(pickle.dumps("x" * 1000))
    with pytest.raises(InvalidPayload, match="declared size"):
        ser.loads(_forge(b"s3cret", squeezed[:-10], flags=1, raw_len=1015), key=KEY)
    with pytest.raises(InvalidPayload, match="declared size"):
        ser.loads(_forge(b"s3cret", pickle.dumps("v"), raw_len=3), key=KEY)


def test_signed_zlib_bomb_is_stopped_by_max_size() -> None:
    bomb_size = 20 * 1024 * 1024
    # An honest writer with a larger max_size than the reader's: stopped before inflating.
    writer = Serializer("s3cret", max_size=bomb_size * 2)
    payload = writer.dumps(bytes(bomb_size), key=KEY)
    assert len(payload) < bomb_size // 50
    reader = Serializer("s3cret", max_size=1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidPayload, match="max_size"):
            reader.loads(payload, key=KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024

    # A key holder lying about the size: inflating stops at the declared size.
    body = zlib.compress(pickle.dumps(bytes(bomb_size), pickle.HIGHEST_PROTOCOL), 9)
    forged = _forge(b"s3cret", body, flags=1, raw_len=1000)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidPayload, match="declared size"):
            Serializer("s3cret").loads(forged, key=KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_dumps_refuses_what_loads_would_reject() -> None:
    ser = Serializer("k", max_size=1000)
    with pytest.raises(ValueError, match="max_size=1000"):
        ser.dumps(b"x" * 2000)
    assert ser.loads(ser.dumps(b"x" * 900))[0] == b"x" * 900


def test_dumps_argument_errors(ser: Serializer) -> None:
    with pytest.raises(TypeError, match="key must be the encoded key as bytes"):
        ser.dumps("v", key="str key")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be the encoded key as bytes"):
        ser.loads(ser.dumps("v"), key="str key")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expires"):
        ser.dumps("v", expires="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        ser.dumps("v", expires=math.nan)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        ser.dumps(lambda: None)
    with pytest.raises(TypeError):
        ser.dumps(threading.Lock())


# ---- the pickle is never loaded unless verified -----------------------------------------


def test_marker_gadget_works_when_signed(ser: Serializer, tmp_path: Path) -> None:
    # The control experiment: a verified payload IS unpickled, so the marker appears.
    marker = tmp_path / "pwned"
    for value in (WritesMarker(marker), [WritesMarker(marker), b"a" * 100_000]):
        payload = ser.dumps(value, key=KEY)
        loaded, _ = ser.loads(payload, key=KEY)
        (loaded if isinstance(loaded, list) else [loaded])[0].close()
        assert marker.exists()
        marker.unlink()
    assert _flags(payload) == 1


def test_unverified_pickles_are_never_loaded(ser: Serializer, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    attacker = Serializer("attacker-key")
    evil = WritesMarker(marker)
    padded = [evil, b"a" * 100_000]  # compressed variant
    attempts: list[bytes] = [
        pickle.dumps(evil),  # a bare pickle
        attacker.dumps(evil, key=KEY),  # signed with a foreign key
        attacker.dumps(padded, key=KEY),
        Serializer(["attacker-key", "s3cret"]).dumps(evil, key=KEY),  # their key first
        _forge(b"attacker-key", pickle.dumps(evil)),
    ]
    # Our key id with the attacker's signature.
    relabelled = bytearray(attacker.dumps(evil, key=KEY))
    relabelled[4:8] = _key_id(b"s3cret")
    attempts.append(bytes(relabelled))
    # Genuine payloads, tampered with: a bit flipped in the body, the tag, the header.
    for value in (evil, padded):
        genuine = ser.dumps(value, key=KEY)
        for position in (3, 12, 40, len(genuine) // 2, len(genuine) - 1):
            tampered = bytearray(genuine)
            tampered[position] ^= 0x01
            attempts.append(bytes(tampered))
        attempts.append(genuine[:-1])
        attempts.append(genuine[:-32] + bytes(32))
    # Genuine, but stored under another key.
    other_key = ser.dumps(evil, key=b"sother")
    for data in attempts:
        with pytest.raises(InvalidPayload):
            ser.loads(data, key=KEY)
    with pytest.raises(InvalidPayload):
        ser.loads(other_key, key=KEY)
    assert not marker.exists()


# ---- key rotation -----------------------------------------------------------------------


def test_key_rotation() -> None:
    old = Serializer("old")
    rotating = Serializer(["new", "old"])
    new = Serializer("new")
    rolled_back = Serializer(["old", "new"])

    from_old = old.dumps("from old", key=KEY)
    from_rotating = rotating.dumps("from rotating", key=KEY)

    # The rotating reader accepts both keys, and signs with the new one.
    assert rotating.loads(from_old, key=KEY)[0] == "from old"
    assert rotating.loads(from_rotating, key=KEY)[0] == "from rotating"
    assert new.loads(from_rotating, key=KEY)[0] == "from rotating"
    # Readers not yet rotated reject the new key; fully rotated ones reject the old.
    with pytest.raises(InvalidPayload):
        old.loads(from_rotating, key=KEY)
    with pytest.raises(InvalidPayload):
        new.loads(from_old, key=KEY)
    # Rolling back ([old, new]) still reads what the rotated writers wrote.
    assert rolled_back.loads(from_rotating, key=KEY)[0] == "from rotating"
    assert old.loads(rolled_back.dumps("back", key=KEY), key=KEY)[0] == "back"


def test_str_and_bytes_keys_are_the_same_secret() -> None:
    assert Serializer(b"caf\xc3\xa9").loads(Serializer("café").dumps(1))[0] == 1
    assert Serializer(("a", b"b")).loads(Serializer("b").dumps(2))[0] == 2


# ---- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("secret", [None, "", b"", [], (), ["ok", ""], [b""]], ids=repr)
def test_missing_key_is_a_value_error_explaining_why(secret: object) -> None:
    with pytest.raises(ValueError, match="execute code") as info:
        Serializer(secret)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigurationError)


@pytest.mark.parametrize(
    "secret", [123, bytearray(b"k"), memoryview(b"k"), {"k"}, [b"ok", 3], object()], ids=repr
)
def test_key_of_wrong_type_is_a_type_error(secret: object) -> None:
    with pytest.raises(TypeError, match="checksum_key"):
        Serializer(secret)  # type: ignore[arg-type]


def test_positional_key_index_is_named() -> None:
    with pytest.raises(TypeError, match=r"checksum_key\[1\]"):
        Serializer(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"checksum_key\[2\] is empty"):
        Serializer(["ok", "fine", ""])


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("compress_threshold", -1, ValueError),
        ("compress_threshold", 1.5, TypeError),
        ("compress_threshold", True, TypeError),
        ("compress_level", 10, ValueError),
        ("compress_level", -2, ValueError),
        ("compress_level", "9", TypeError),
        ("max_size", 0, ValueError),
        ("max_size", None, TypeError),
        ("compress", "yes", TypeError),
    ],
)
def test_bad_options_are_named(option: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=option):
        Serializer("k", **{option: value})


def test_repr_does_not_leak_the_key() -> None:
    text = repr(Serializer(["topsecret", "oldsecret"]))
    assert "secret" not in text
    assert "2 key(s)" in text


def test_concurrent_use_from_threads(ser: Serializer) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(200):
                key = b"s%d-%d" % (worker, i)
                value = {"worker": worker, "i": i, "pad": "x" * (i * 20)}
                assert ser.loads(ser.dumps(value, key=key), key=key)[0] == value
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)


# ---- RateLimitedLog ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged(
    caplog: pytest.LogCaptureFixture,
) -> tuple[RateLimitedLog, FakeClock, pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="chorde.test.ratelimit")
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger("chorde.test.ratelimit"), interval=60, clock=clock)
    return log, clock, caplog


def test_rate_limited_log_once_per_interval(logged) -> None:
    log, clock, caplog = logged
    assert log.warning("bad payload for %r", "k1") is True
    for i in range(5):
        clock.now += 10
        assert log.warning("bad payload for %r", f"k{i}") is False
    assert caplog.messages == ["bad payload for 'k1'"]
    assert log.suppressed == 5
    clock.now += 10  # 60 s after the first
    assert log.warning("bad payload for %r", "k9") is True
    assert caplog.messages[-1] == "bad payload for 'k9' (5 similar suppressed)"
    clock.now += 59.9
    assert log.warning("bad payload for %r", "k10") is False
    clock.now += 0.1
    assert log.warning("bad payload for %r", "k11") is True
    assert caplog.messages[-1] == "bad payload for 'k11' (1 similar suppressed)"
    assert log.suppressed == 6


def test_rate_limited_log_kinds_are_independent(logged) -> None:
    log, _, caplog = logged
    assert log.warning("server %s down", "a", kind="down a")
    assert log.warning("server %s down", "b", kind="down b")
    assert not log.warning("server %s down", "a", kind="down a")
    assert log.error("another %s", "message")
    assert not log.error("another %s", "message again")
    assert caplog.messages == ["server a down", "server b down", "another message"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2 + [logging.ERROR]


def test_rate_limited_log_percent_in_plain_message(logged) -> None:
    log, clock, caplog = logged
    log.warning("100% broken")
    log.warning("100% broken")
    clock.now += 60
    log.warning("100% broken")
    assert caplog.messages == ["100% broken", "100% broken (1 similar suppressed)"]


def test_rate_limited_log_skips_disabled_levels() -> None:
    logger = logging.getLogger("chorde.test.ratelimit.quiet")
    logger.setLevel(logging.ERROR)
    try:
        log = RateLimitedLog(logger, interval=60, clock=FakeClock())
        assert log.warning("ignored") is False
        assert log.suppressed == 0
        assert log.error("shown") is True
    finally:
        logger.setLevel(logging.NOTSET)


def test_rate_limited_log_memory_is_bounded(logged) -> None:
    log, clock, _ = logged
    limit = RateLimitedLog._MAX_KINDS
    first = [str(i) for i in range(limit)]
    for kind in first:
        assert log.warning("kind %s", kind, kind=kind)
    assert len(log._kinds) == limit
    # Full of recent kinds: the least recently logged eighth goes.
    clock.now += 30
    assert log.warning("recent", kind="recent")
    assert "0" not in log._kinds and first[-1] in log._kinds and "recent" in log._kinds
    assert len(log._kinds) <= limit
    # Once the first batch is stale it goes first; the recent kind stays rate limited.
    clock.now += 30
    new = [f"new {i}" for i in range(limit // 2)]
    for kind in new:
        assert log.warning("kind %s", kind, kind=kind)
        assert len(log._kinds) <= limit
    assert not set(first) & set(log._kinds)
    assert not log.warning("recent", kind="recent")
    assert not log.warning("kind %s", new[-1], kind=new[-1])


def test_rate_limited_log_threads(logged) -> None:
    log, _, caplog = logged
    barrier = threading.Barrier(8)

    def spam() -> None:
        barrier.wait(timeout=30)
        for _ in range(200):
            log.warning("contended")

    threads = [threading.Thread(target=spam) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert caplog.messages == ["contended"]
    assert log.suppressed == 8 * 200 - 1


def test_rate_limited_log_bad_interval() -> None:
    logger = logging.getLogger("chorde.test")
    with pytest.raises(ValueError, match="interval"):
        RateLimitedLog(logger, interval=-1)
    with pytest.raises(TypeError, match="interval"):
        RateLimitedLog(logger, interval="60")  # type: ignore[arg-type]


def test_hmac_is_sha256_over_the_documented_layout(ser: Serializer) -> None:
    payload = ser.dumps("v", key=KEY, expires=5.0)
    magic, version, flags, key_id, key_len, expires, raw_len = HEADER.unpack_from(payload)
    assert (magic, version, flags, key_id) == (MAGIC, FORMAT_VERSION, 0, _key_id(b"s3cret"))
    assert (key_len, expires) == (len(KEY), 5.0)
    assert payload[HEADER.size : HEADER.size + key_len] == KEY
    body = payload[HEADER.size + key_len : -32]
    assert raw_len == len(body) and pickle.loads(body) == "v"
    expected = hmac.new(b"s3cret", payload[:-32], hashlib.sha256).digest()
    assert payload[-32:] == expected


@pytest.mark.parametrize("key_len", [1, 16, 63, 64, 65, 200])
def test_precomputed_mac_matches_rfc2104_hmac(key_len):
    import hashlib
    import hmac

    from chorde.serialization import _Mac

    key = bytes(range(256))[:key_len] * 1
    for message in (b"", b"x", bytes(1000)):
        expected = hmac.new(key, message, hashlib.sha256).digest()
        assert _Mac(key).digest(message) == expected
        assert _Mac(key).digest(message[:3], memoryview(message)[3:]) == expected
