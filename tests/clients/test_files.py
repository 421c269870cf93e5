"""FilesCacheClient: raw arrays and bytes, integrity, the size bound, crashes and processes.

The contract suite (tests/contract) covers the client contract; this module covers what is
particular to a directory shared by processes. Multi-process tests run real interpreters
(``subprocess``) over one directory under ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from chorde import CacheMissError, ConfigurationError
from chorde.clients import _filestore as fs
from chorde.clients.files import FilesCacheClient

SECRET = "files-secret"
TTL = 300
MB = 1024 * 1024


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def client(cache_dir):
    c = FilesCacheClient(cache_dir, 256 * MB, SECRET)
    yield c
    c.close()


def entry_files(path: Path) -> list[Path]:
    return sorted(p for p in (path / "entries").rglob("*") if p.is_file())


def blocks(nbytes: int, path: Path) -> int:
    """``nbytes`` rounded up to whole blocks of the filesystem of ``path``."""
    block = os.statvfs(path).f_frsize
    return -(-nbytes // block) * block


def disk_usage(path: Path) -> int:
    """Space of entry files and temporaries now, each rounded up to whole blocks as the
    cache counts them (entries first: a concurrent rename from tmp/ to entries/ is then
    missed, never counted twice)."""
    total = 0
    for sub in ("entries", "tmp"):
        for root, _, files in os.walk(path / sub):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += blocks(os.stat(os.path.join(root, name)).st_size, path)
    return total


def entry_path(client: FilesCacheClient, key) -> Path:
    return Path(client._locate(key)[1])


def mapped(arr) -> bool:
    """Whether an array's memory comes from a memory map (through its chain of bases)."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---- numpy arrays ------------------------------------------------------------------


ARRAYS = {
    "float64-2d": lambda: np.arange(12.0).reshape(3, 4),
    "int8": lambda: np.arange(-5, 5, dtype=np.int8),
    "bool": lambda: np.array([True, False, True]),
    "complex": lambda: np.array([1 + 2j, 3 - 4j]),
    "big-endian": lambda: np.arange(6, dtype=">i4"),
    "datetime": lambda: np.array(["2024-01-01T00:00", "2025-06-30T12:00"], dtype="M8[ns]"),
    "unicode": lambda: np.array(["ab", "cdé"], dtype="<U5"),
    "void": lambda: np.zeros(3, dtype="V8"),
    "0-d": lambda: np.array(3.5),
    "empty": lambda: np.zeros((0, 3)),
    "fortran": lambda: np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "strided": lambda: np.arange(20.0).reshape(4, 5)[::2, 1::2],
    "3-d": lambda: np.arange(24, dtype=np.uint16).reshape(2, 3, 4),
}


@pytest.mark.parametrize("make", ARRAYS.values(), ids=ARRAYS.keys())
def test_array_roundtrip_is_a_read_only_mapped_view(client, make):
    arr = make()
    client.put("a", arr, TTL)
    got = client.get("a")
    assert type(got) is np.ndarray
    assert got.dtype == arr.dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)
    assert not got.flags.writeable
    with pytest.raises(ValueError):
        got[...] = 0
    if arr.size:
        assert mapped(got)  # zero-copy: the array's memory is the file's mapping
        assert not got.flags.owndata


def test_fortran_order_is_kept(client):
    arr = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    client.put("f", arr, TTL)
    assert client.get("f").flags.f_contiguous


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.array([{"a": 1}, None], dtype=object),
        lambda: np.zeros(2, dtype=[("x", "i4"), ("y", "f8")]),
        lambda: np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
    ],
    ids=["object", "structured", "masked"],
)
def test_arrays_that_need_pickle_still_roundtrip(client, make):
    arr = make()
    client.put("p", arr, TTL)
    got = client.get("p")
    assert type(got) is type(arr) and got.dtype == arr.dtype
    assert repr(got) == repr(arr)
    assert not mapped(got)
    data = entry_path(client, "p").read_bytes()
    assert fs.parse_header(data, len(data)).kind == fs.KIND_PICKLE


def test_large_array_get_does_not_read_the_file(client):
    arr = np.random.default_rng(1).random(4 * MB // 8)
    client.put("big", arr, TTL)
    got = client.get("big")
    np.testing.assert_array_equal(got, arr)
    assert mapped(got)


def test_views_outlive_replacement_delete_and_clear(client):
    client.put("k", np.full(1000, 1.0), TTL)
    first = client.get("k")
    client.put("k", np.full(1000, 2.0), TTL)
    second = client.get("k")
    client.delete("k")
    client.put("j", np.full(1000, 3.0), TTL)
    third = client.get("j")
    client.clear()
    # Each reader keeps the value it was given: the old inodes live on while mapped.
    assert (first == 1.0).all() and (second == 2.0).all() and (third == 3.0).all()
    assert client.get("k", None) is None and client.get("j", None) is None
    assert client.usage == 0


# ---- bytes-like values -------------------------------------------------------------


def test_bytes_and_bytearray_keep_their_type(client):
    client.put("b", b"\x00\x01data", TTL)
    client.put("ba", bytearray(b"mutable"), TTL)
    client.put("big", os.urandom(200_000), TTL)
    assert client.get("b") == b"\x00\x01data" and type(client.get("b")) is bytes
    got = client.get("ba")
    assert got == bytearray(b"mutable") and type(got) is bytearray
    assert len(client.get("big")) == 200_000


def test_memoryview_comes_back_mapped_with_format_and_shape(client):
    src = np.arange(6, dtype=np.float64).reshape(2, 3)
    client.put("m", memoryview(src), TTL)
    got = client.get("m")
    assert type(got) is memoryview and got.readonly
    assert got.format == "d" and got.shape == (2, 3)
    assert got.tolist() == src.tolist()
    assert isinstance(got.obj, mmap.mmap)


def test_memoryview_with_non_native_format_comes_back_as_bytes(client):
    src = np.arange(4, dtype=">i4")
    client.put("m", memoryview(src), TTL)
    got = client.get("m")
    assert got.format == "B" and got.tobytes() == src.tobytes()
    client.put("e", memoryview(b""), TTL)
    assert client.get("e").tobytes() == b""


WITHOUT_NUMPY = """
import sys
if sys.argv[2] == "blocked":
    sys.modules["numpy"] = None  # import numpy now raises ImportError
from chorde.clients.files import FilesCacheClient
from chorde.errors import MissingDependencyError
c = FilesCacheClient(sys.argv[1], 10**8, "files-secret")
c.put("b", b"raw", 60)
c.put("m", memoryview(b"view"), 60)
c.put("p", {"x": [1, 2]}, 60)
assert c.get("b") == b"raw" and bytes(c.get("m")) == b"view" and c.get("p") == {"x": [1, 2]}
if sys.argv[2] == "blocked":
    try:
        c.get("array")
    except MissingDependencyError as exc:
        assert "chorde[shmem]" in str(exc), exc
    else:
        raise AssertionError("reading an array without numpy did not raise")
else:
    assert "numpy" not in sys.modules, "numpy was imported"
print("ok")
"""


@pytest.mark.parametrize("mode", ["unimported", "blocked"])
def test_works_without_numpy(client, mode):
    client.put("array", np.arange(3), TTL)
    result = run_python(WITHOUT_NUMPY, str(client.path), mode)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---- integrity ---------------------------------------------------------------------


def flip_each_byte(path: Path, positions, check) -> None:
    original = path.read_bytes()
    for pos in positions:
        data = bytearray(original)
        data[pos] ^= 0x20
        path.write_bytes(data)
        check(pos)
    path.write_bytes(original)


@pytest.mark.parametrize(
    "value", [{"pickled": [1, 2, 3]}, b"raw bytes value"], ids=["pickle", "bytes"]
)
def test_every_flipped_byte_is_a_miss(client, value):
    client.put("k", value, TTL)
    path = entry_path(client, "k")
    size = path.stat().st_size
    errors = client.stats.errors

    def check(pos):
        assert client.get("k", "miss") == "miss", f"flipped byte {pos} went unnoticed"
        assert client.getTtl("k", "miss") == ("miss", -1.0)

    flip_each_byte(path, range(size), check)
    assert client.stats.errors >= errors + size
    assert client.get("k") == value  # restored


def test_flipped_header_bytes_of_an_array_are_a_miss(client):
    client.put("a", np.arange(100.0), TTL)
    path = entry_path(client, "a")
    data = path.read_bytes()
    header_length = fs.header_length(data, len(data))

    def check(pos):
        assert client.get("a", None) is None, f"flipped header byte {pos} went unnoticed"

    flip_each_byte(path, range(header_length), check)
    np.testing.assert_array_equal(client.get("a"), np.arange(100.0))


def test_truncated_foreign_and_misplaced_files_are_misses(client):
    client.put("a", np.arange(100.0), TTL)
    client.put("b", "value of b", TTL)
    a, b = entry_path(client, "a"), entry_path(client, "b")
    a_bytes = a.read_bytes()
    a.write_bytes(a_bytes[:-8])
    assert client.get("a", None) is None
    a.write_bytes(b"#!/bin/sh\necho not a cache entry\n")
    assert client.get("a", None) is None
    a.write_bytes(b"")
    assert client.get("a", None) is None
    # The entry of a under b's name: its stored key says it is a's.
    b.write_bytes(a_bytes)
    assert client.get("b", None) is None
    assert not client.renew("b", TTL)
    assert not client.contains("b")


def test_symlinks_in_the_directory_are_not_followed(client, tmp_path):
    target = tmp_path / "elsewhere"
    client.put("k", "v", TTL)
    link = entry_path(client, "k")
    target.write_bytes(link.read_bytes())
    link.unlink()
    # A valid entry for the key, but reached through a planted symlink.
    link.symlink_to(target)
    before = target.read_bytes()
    assert client.get("k", None) is None
    assert not client.contains("k") and not client.renew("k", TTL)
    client.expire("k")
    assert target.read_bytes() == before
    client.put("k", "new", TTL)  # replaces the link itself
    assert client.get("k") == "new" and target.read_bytes() == before


def test_a_file_as_path_is_a_configuration_error(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ConfigurationError, match="not usable as a cache directory"):
        FilesCacheClient(not_a_dir, MB, SECRET)


class Boom:
    """Unpickling it creates a file: the signature check must stop it first."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_entries_signed_with_another_key_are_never_unpickled(cache_dir, tmp_path):
    marker = tmp_path / "unpickled"
    foreign = FilesCacheClient(cache_dir, 10 * MB, "someone else's key")
    ours = FilesCacheClient(cache_dir, 10 * MB, SECRET)
    foreign.put("k", Boom(str(marker)), TTL)
    assert ours.get("k", None) is None
    assert ours.stats.errors == 1
    assert not marker.exists()
    foreign.get("k")  # the value is live: its own key unpickles it
    assert marker.exists()


# ---- expiry ------------------------------------------------------------------------


def test_renew_and_expire_rewrite_the_entry_in_place(client):
    client.put("k", np.arange(10), 100)
    inode = entry_path(client, "k").stat().st_ino
    client.expire("k")
    assert client.get("k", None) is None
    value, ttl = client.getTtl("k")
    assert ttl <= 0 and list(value) == list(range(10))
    assert client.renew("k", 1000)
    assert 990 < client.getTtl("k")[1] <= 1000
    assert entry_path(client, "k").stat().st_ino == inode


def test_purge_drops_expired_and_corrupt_entries(cache_dir):
    clock = [1000.0]
    c = FilesCacheClient(cache_dir, 10 * MB, SECRET, clock=lambda: clock[0])
    c.put("old", b"x" * 1000, 10)
    c.put("recent", b"y" * 1000, 100)
    c.put("live", b"z" * 1000, 1000)
    c.put("junk", 1, 1000)
    junk = entry_path(c, "junk")
    junk.write_bytes(b"garbage" + junk.read_bytes()[7:])  # same size, bad magic
    clock[0] += 200
    c.purge(timeout=150)
    assert not entry_path(c, "old").exists() and not entry_path(c, "junk").exists()
    assert c.getTtl("recent")[1] < 0
    c.purge()
    assert c.getTtl("recent", None) == (None, -1.0)
    assert c.get("live") == b"z" * 1000
    assert c.usage == disk_usage(cache_dir)


# ---- size bound and eviction -------------------------------------------------------


def test_lru_eviction_keeps_the_bound(cache_dir):
    c = FilesCacheClient(cache_dir, 20_000, SECRET, touch_interval=0)
    values = {f"k{i}": os.urandom(4000) for i in range(5)}
    for key in ("k0", "k1", "k2", "k3"):
        c.put(key, values[key], TTL)
    assert c.get("k0") == values["k0"]  # k0 is now the most recently used
    c.put("k4", values["k4"], TTL)
    assert c.get("k1", None) is None  # the least recently used went
    assert all(c.get(k) == values[k] for k in ("k0", "k2", "k3", "k4"))
    assert c.stats.evictions == 1
    assert c.usage == disk_usage(cache_dir) <= c.capacity


def test_a_value_larger_than_the_cache_is_refused(cache_dir):
    c = FilesCacheClient(cache_dir, 10_000, SECRET)
    with pytest.raises(ValueError, match=r"'huge'.*10000"):
        c.put("huge", os.urandom(20_000), TTL)
    assert c.usage == 0


def test_usage_counts_every_process(cache_dir):
    a = FilesCacheClient(cache_dir, 10 * MB, SECRET)
    b = FilesCacheClient(cache_dir, 10 * MB, SECRET)
    a.put("x", b"1" * 10_000, TTL)
    b.put("y", b"2" * 20_000, TTL)
    b.put("x", b"3" * 5_000, TTL)  # replaces a's entry: its bytes are released
    assert a.usage == b.usage == disk_usage(cache_dir)
    a.delete("y")
    assert b.usage == disk_usage(cache_dir) == blocks(entry_path(a, "x").stat().st_size, cache_dir)


def test_usage_counts_whole_blocks(cache_dir):
    c = FilesCacheClient(cache_dir, 10 * MB, SECRET)
    block = os.statvfs(cache_dir).f_frsize
    c.put("tiny", b"x", TTL)
    assert c.usage == block  # what the file takes on disk, not its 60-odd bytes
    c.put("k", os.urandom(block), TTL)  # a block of data and a header: two blocks
    assert c.usage == 3 * block == disk_usage(cache_dir)
    small = FilesCacheClient(cache_dir / "small", block, SECRET)
    with pytest.raises(ValueError, match=f"'big' takes {2 * block} bytes"):
        small.put("big", os.urandom(block - 20), TTL)  # with its header: two blocks


def test_threads_share_a_small_cache(cache_dir):
    c = FilesCacheClient(cache_dir, 200_000, SECRET)
    failures: list[BaseException] = []
    peak = [0]

    def work(seed: int) -> None:
        try:
            for i in range(300):
                key = (seed * 7 + i) % 50
                c.put(key, np.full(1000 + key, key, dtype=np.int32), TTL)
                got = c.get((key + 3) % 50, None)
                if got is not None:
                    assert (got == (key + 3) % 50).all() and got.size == 1000 + got[0]
                peak[0] = max(peak[0], c.usage)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    assert peak[0] <= c.capacity
    assert c.usage == disk_usage(cache_dir)
    assert c.stats.errors == 0


def test_add_is_atomic_across_threads(client):
    results: list[tuple[bool, int]] = []
    barrier = threading.Barrier(8)

    def adder(n: int) -> None:
        barrier.wait(10)
        results.append((client.add("once", n, TTL), n))

    threads = [threading.Thread(target=adder, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [n for added, n in results if added]
    assert len(results) == 8 and len(winners) == 1
    assert client.get("once") == winners[0]


# ---- crashes and stale temporaries -------------------------------------------------


def state_rebuilt_long_ago(path: Path) -> None:
    """Age the counter's last rebuild, so that the next client to open rebuilds it."""
    with open(path / "state", "r+b") as f:
        magic, used, pending, _, dirty = fs._STATE.unpack(f.read(fs._STATE.size))
        f.seek(0)
        f.write(fs._STATE.pack(magic, used, pending, 0.0, dirty))


def test_liveness_is_the_writers_lock_not_its_pid(cache_dir):
    FilesCacheClient(cache_dir, 10 * MB, SECRET).close()
    tmp = cache_dir / "tmp"
    # A dead writer's temporary named after a live pid (ours: as if the pid were reused),
    # and a live writer's named after a pid that may not exist here (another container).
    dead = tmp / f"{os.getpid()}.abcdef.8192.tmp"
    dead.write_bytes(b"partial")
    live = tmp / "99998.abcdef.16384.tmp"
    live.write_bytes(b"partial")
    with open(live, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as its writer does while writing
        state_rebuilt_long_ago(cache_dir)
        c = FilesCacheClient(cache_dir, 10 * MB, SECRET)
        assert not dead.exists() and live.exists()
        c.put("k", b"v" * 100, TTL)
        # The live writer's whole reservation counts, not the little it wrote so far.
        assert c.usage == disk_usage(cache_dir) - blocks(7, cache_dir) + 16384
    # Its lock is free now, as if its writer had died: the next look reclaims it.
    assert c.usage == disk_usage(cache_dir)
    assert not live.exists()


HALF_WRITER = """
import os, sys, time
from chorde.clients.files import FilesCacheClient
c = FilesCacheClient(sys.argv[1], 10**8, "files-secret")
tmp_path, fd = c._store.reserve(int(sys.argv[2]))
os.write(fd, b"x" * (int(sys.argv[2]) // 2))
child = -1
if sys.argv[3] == "fork":
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:  # past the fork handlers, which closed its copies of the temporaries
        os.write(ready_w, b"x")
        time.sleep(60)  # a child that outlives its parent
        os._exit(0)
    os.read(ready_r, 1)
print(tmp_path, child, flush=True)
time.sleep(60)
"""


def start_half_writer(cache_dir: Path, reserve: int, fork: bool = False) -> tuple:
    """A writer process stopped half-way through writing a reserved temporary: the
    process, its temporary, and the pid of its forked child (if ``fork``)."""
    code = textwrap.dedent(HALF_WRITER)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(cache_dir), str(reserve), "fork" if fork else "-"],
        stdout=subprocess.PIPE,
        text=True,
    )
    tmp_path, child = proc.stdout.readline().split()
    return proc, Path(tmp_path), int(child)


def test_a_killed_writer_is_reclaimed_by_the_next_write_or_usage_read(cache_dir):
    c = FilesCacheClient(cache_dir, 10 * MB, SECRET)  # sweeps every 600 s: not what acts
    c.put("a", b"1" * 10_000, TTL)
    first, first_tmp, _ = start_half_writer(cache_dir, MB)
    second, second_tmp, _ = start_half_writer(cache_dir, 2 * MB)
    try:
        assert first_tmp.exists() and second_tmp.exists()
        # Live writers: their temporaries stay and their whole reservations count.
        written = MB // 2 + MB
        assert c.usage == disk_usage(cache_dir) - written + MB + 2 * MB
        first.kill()
        first.wait(30)
        assert c.usage == disk_usage(cache_dir) - blocks(MB, cache_dir) + 2 * MB
        assert not first_tmp.exists() and second_tmp.exists()
        second.kill()
        second.wait(30)
        other = FilesCacheClient(cache_dir, 10 * MB, SECRET)
        other.put("b", b"2" * 10_000, TTL)  # a write by any process reclaims it
        assert not second_tmp.exists()
        assert c.usage == other.usage == disk_usage(cache_dir)
        assert c.get("a") == b"1" * 10_000 and c.get("b") == b"2" * 10_000
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait(30)


def test_a_forked_child_does_not_keep_a_dead_writers_temporary(cache_dir):
    c = FilesCacheClient(cache_dir, 10 * MB, SECRET)
    writer, tmp, child = start_half_writer(cache_dir, MB, fork=True)
    try:
        assert tmp.exists()
        writer.kill()
        writer.wait(30)
        os.kill(child, 0)  # the child lives on, with its copy of the writer's descriptors
        assert c.usage == disk_usage(cache_dir) and not tmp.exists()
    finally:
        writer.kill()
        writer.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


KILLED_HOLDING_THE_LOCK = """
import os, signal, sys
from chorde.clients.files import FilesCacheClient
c = FilesCacheClient(sys.argv[1], 10**8, "files-secret")
with c._store._section() as counter:
    counter.mark()
    os.unlink(sys.argv[2])  # a change made, the counter not yet saved
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_holding_the_lock_leaves_the_counter_rebuilt(client, cache_dir):
    client.put("a", os.urandom(100_000), TTL)
    client.put("b", os.urandom(100_000), TTL)
    before = client.usage
    result = run_python(KILLED_HOLDING_THE_LOCK, str(cache_dir), str(entry_path(client, "a")))
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert client.usage == disk_usage(cache_dir) < before
    assert client.get("a", None) is None and len(client.get("b")) == 100_000


def test_opening_rebuilds_the_counter_from_the_directory(cache_dir):
    c = FilesCacheClient(cache_dir, 10 * MB, SECRET)
    for k in range(5):
        c.put(k, os.urandom(50_000), TTL)
    c.close()
    # Changed by other means: an entry deleted by hand, a dead writer's temporary.
    entry_path(c, 0).unlink()
    stray = cache_dir / "tmp" / "12345.abcdef.65536.tmp"
    stray.write_bytes(b"x" * 1000)
    state_rebuilt_long_ago(cache_dir)
    c = FilesCacheClient(cache_dir, 10 * MB, SECRET)
    assert not stray.exists()
    assert c.usage == disk_usage(cache_dir) == 4 * blocks(50_000 + 100, cache_dir)


def test_the_counter_is_reconciled_every_sweep_interval(cache_dir):
    c = FilesCacheClient(cache_dir, 10 * MB, SECRET, sweep_interval=0)
    for k in range(3):
        c.put(k, os.urandom(50_000), TTL)
    entry_path(c, 0).unlink()  # behind the counter's back
    c.put(3, b"x", TTL)  # the first write after sweep_interval recounts
    assert c.usage == disk_usage(cache_dir)


KILLED_WRITER = """
import sys
import numpy as np
from chorde.clients.files import FilesCacheClient
c = FilesCacheClient(sys.argv[1], 10**9, "files-secret")
print("ready", flush=True)
for i in range(200):
    c.put(i % 8, np.full(4 * 1024 * 1024, float(i % 8)), 300)
"""


@pytest.mark.slow
def test_sigkill_mid_write_leaves_no_corrupt_entry(cache_dir):
    FilesCacheClient(cache_dir, 10**9, SECRET).close()
    tmp = cache_dir / "tmp"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(cache_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    caught = None
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while caught is None and proc.poll() is None and time.monotonic() < deadline:
            for entry in os.scandir(tmp):
                reserved = int(entry.name.split(".")[2])
                try:
                    written = entry.stat().st_size
                except FileNotFoundError:
                    continue
                if 0 < written < reserved:
                    proc.send_signal(signal.SIGKILL)
                    caught = (entry.name, written, reserved)
                    break
    finally:
        proc.kill()
        proc.wait(30)
    assert caught is not None, "never saw a write in progress"
    assert proc.returncode == -signal.SIGKILL

    c = FilesCacheClient(cache_dir, 10**9, SECRET)
    for key in range(8):
        got = c.get(key, None)
        assert got is None or (got.shape == (4 * MB,) and (got == float(key)).all())
    assert c.stats.errors == 0
    # The dead writer's temporary is reclaimed by the next write, which succeeds.
    c.put(0, np.full(4 * MB, 42.0), TTL)
    assert (c.get(0) == 42.0).all()
    assert list(tmp.iterdir()) == []
    assert c.usage == disk_usage(cache_dir)


# ---- processes ---------------------------------------------------------------------


def test_fork_child_uses_the_parents_client(client):
    client.put("parent", 1, TTL)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_forked, args=(client,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert client.get("child") == 2


def test_pickled_client_reopens_the_directory_in_a_spawned_process(client):
    client.put("parent", 1, TTL)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_use_client, (client,)) == 1
    assert client.get("child") == 2


def _use_client(client: FilesCacheClient) -> int:
    client.put("child", 2, TTL)
    return client.get("parent")


def _forked(client: FilesCacheClient) -> None:
    assert client.get("parent") == 1
    client.put("child", 2, TTL)


CONCURRENT_WORKER = """
import json, random, sys
import numpy as np
from chorde.clients.files import FilesCacheClient

path, size, wid, n_entries, big_every = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:])
c = FilesCacheClient(path, size, "files-secret")
rng = random.Random(wid)
big = 50 * 1024 * 1024 // 8
total = 4 * n_entries
report = {"puts": 0, "hits": 0, "torn": [], "big_hits": 0, "peak_usage": 0}


def value(key, n):
    # Self-describing: a torn or mixed value cannot pass check().
    if key % 3 == 0:
        return {"key": key, "data": [key] * (n % 5000)}
    arr = np.full(n, float(key))
    arr[0] = -key
    return arr


def check(key, got):
    if isinstance(got, dict):
        return got == {"key": key, "data": [key] * len(got["data"])}
    return got[0] == -key and bool((got[1:] == key).all()) and not got.flags.writeable


# This worker writes entries wid, wid + 4, ...: the four write 4 * n_entries in all, and
# each reads entries of all four.
for i in range(n_entries):
    key = wid + 4 * i
    if i % big_every == big_every - 1:
        c.put(key, value(key, big), 300)
    else:
        c.put(key, value(key, rng.randrange(1, 200_000)), 300)
    report["puts"] += 1
    if rng.random() < 0.05:
        c.delete(rng.randrange(total))
    for probe in (key, rng.randrange(total), rng.randrange(total)):
        got = c.get(probe, None)
        if got is not None:
            report["hits"] += 1
            report["big_hits"] += getattr(got, "size", 0) == big
            if not check(probe, got):
                report["torn"].append(probe)
        del got
    report["peak_usage"] = max(report["peak_usage"], c.usage)
report["errors"] = c.stats.errors
report["evictions"] = c.stats.evictions
print(json.dumps(report))
"""


@pytest.mark.slow
def test_four_processes_share_the_cache_within_the_bound(cache_dir):
    size = 300 * MB
    entry_slack = 50 * MB + 4096  # one large entry
    observer = FilesCacheClient(cache_dir, size, SECRET)
    peaks = {"disk": 0, "counter": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peaks["disk"] = max(peaks["disk"], disk_usage(cache_dir))
            peaks["counter"] = max(peaks["counter"], observer.usage)
            done.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    code = textwrap.dedent(CONCURRENT_WORKER)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(cache_dir), str(size), str(wid), "250", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for wid in range(4)
    ]
    try:
        outputs = [w.communicate(timeout=300) for w in workers]
    finally:
        for w in workers:
            w.kill()
        done.set()
        watcher.join(30)
    reports = []
    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
        reports.append(json.loads(out))
    assert [r["torn"] for r in reports] == [[]] * 4
    assert [r["errors"] for r in reports] == [0] * 4
    assert sum(r["puts"] for r in reports) == 1000
    assert all(r["hits"] > 0 for r in reports) and sum(r["big_hits"] for r in reports) > 0
    # The run did push against the bound (about 1 GB was written), and the bound held.
    assert sum(r["evictions"] for r in reports) > 0
    assert max(peaks["counter"], *(r["peak_usage"] for r in reports)) <= size
    assert peaks["disk"] <= size + entry_slack
    assert observer.usage == disk_usage(cache_dir) <= size


STOPPED_HOLDER = """
import os, signal, sys
from chorde.clients.files import FilesCacheClient
c = FilesCacheClient(sys.argv[1], 10**8, "files-secret")
with c._store._section():
    print("holding", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # frozen with the writers' lock
print("released", flush=True)
"""


def test_a_stopped_lock_holder_turns_writes_into_failures_not_hangs(
    client, cache_dir, monkeypatch, caplog
):
    monkeypatch.setattr(fs, "LOCK_TIMEOUT", 0.2)
    caplog.set_level("WARNING", logger="chorde.clients.files")
    for key in ("k", "d", "r"):
        client.put(key, f"old {key}", TTL)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(STOPPED_HOLDER), str(cache_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        client.put("k", "new", TTL)  # gives up on the lock: a dropped write
        assert client.stats.errors == 1 and "writers' lock was held" in caplog.text
        assert client.get("k", None) is None  # the old value is not served in its place
        client.delete("d")  # removed without the lock
        assert client.get("d", None) is None
        assert client.add("a", 1, TTL) is False
        assert client.get("r") == "old r"  # reads take no lock
        assert client.stats.errors == 2
    finally:
        holder.send_signal(signal.SIGCONT)
        out, _ = holder.communicate(timeout=30)
    assert out == "released\n" and holder.returncode == 0
    client.put("k", "newer", TTL)  # the lock is free again
    assert client.get("k") == "newer"
    # The entries removed without the lock are still counted (over, never under) until the
    # count is next rebuilt.
    assert client.usage == disk_usage(cache_dir) + 2 * blocks(100, cache_dir)
    client.close()
    state_rebuilt_long_ago(cache_dir)
    assert FilesCacheClient(cache_dir, MB, SECRET).usage == disk_usage(cache_dir)


# ---- filesystem faults -------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    """A real tmpfs of 8 MiB, to fill up (mounting one needs root: skipped elsewhere)."""
    mount = tmp_path / "small-fs"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no mount command here (test_a_write_past_the_file_size_limit covers it)")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write a file until its filesystem has no block left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (bytes(MB), bytes(4096)):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    assert os.statvfs(path).f_bavail == 0


def test_a_full_filesystem_makes_room_for_the_write(small_fs):
    cache = small_fs / "cache"
    c = FilesCacheClient(cache, 64 * MB, SECRET, touch_interval=0)  # 8 MiB are there
    for k in range(20):
        c.put(k, np.full(MB // 8, float(k)), TTL)  # 1 MiB each
        assert c.get(k)[0] == k
    # Each write that found the filesystem full evicted the least recently used entries
    # for its own size, and was made; the size bound (64 MiB) never came into it.
    assert c.stats.errors == 0 and c.stats.evictions >= 12
    assert c.get(0, None) is None and c.get(19)[0] == 19
    assert list((cache / "tmp").iterdir()) == []
    assert c.usage == disk_usage(cache) <= 8 * MB


def test_a_write_the_full_filesystem_cannot_take_is_dropped(small_fs, caplog):
    cache = small_fs / "cache"
    c = FilesCacheClient(cache, 64 * MB, SECRET)
    c.put("k", "old value", TTL)
    fill(small_fs / "ballast")
    caplog.set_level("WARNING", logger="chorde.clients.files")
    assert c.put("k", np.ones(MB // 8), TTL) is None  # no exception
    assert c.get("k", None) is None  # and the old value is not served in its place
    assert c.add("a", np.ones(MB // 8), TTL) is False
    c.putMulti({"x": b"1" * 100_000, "y": b"2" * 100_000}, TTL)
    assert c.getTtl("x", None) == (None, -1.0)
    assert c.stats.errors == 4
    assert "No space left on device" in caplog.text
    assert list((cache / "tmp").iterdir()) == []
    assert c.usage == disk_usage(cache)
    (small_fs / "ballast").unlink()
    c.put("k", np.ones(MB // 8), TTL)  # room again: written at once
    assert c.get("k").sum() == MB // 8
    assert c.usage == disk_usage(cache)


FILE_SIZE_LIMITED = """
import resource, signal, sys
import numpy as np
from chorde.clients.files import FilesCacheClient
c = FilesCacheClient(sys.argv[1], 10**8, "files-secret")
c.put("k", "old", 60)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing past the limit then fails (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
c.put("k", np.ones(1 << 18), 60)  # 2 MiB: fails half-way
assert c.get("k", None) is None, "the old value came back"
c.put("small", b"fits", 60)
assert c.get("small") == b"fits"
print(c.stats.errors)
"""


def test_a_write_past_the_file_size_limit_is_dropped(cache_dir):
    result = run_python(FILE_SIZE_LIMITED, str(cache_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1"]
    assert "File too large" in result.stderr  # logged
    assert list((cache_dir / "tmp").iterdir()) == []
    c = FilesCacheClient(cache_dir, 10**8, SECRET)
    assert c.usage == disk_usage(cache_dir)


@contextlib.contextmanager
def unwritable(*dirs: Path):
    """Directories nobody can change: immutable for root (chattr +i), else read-only."""
    if os.geteuid() != 0:
        modes = [d.stat().st_mode for d in dirs]
        for d in dirs:
            d.chmod(0o500)
        try:
            yield
        finally:
            for d, mode in zip(dirs, modes, strict=True):
                d.chmod(mode)
        return
    names = [str(d) for d in dirs]
    try:
        done = subprocess.run(["chattr", "+i", *names], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("root ignores permissions, and there is no chattr here")
    if done.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *names], check=True)


def test_an_unwritable_directory_degrades_to_dropped_writes(client, cache_dir, caplog):
    caplog.set_level("WARNING", logger="chorde.clients.files")
    client.put("k", "old", TTL)
    client.put("j", np.arange(10.0), TTL)
    with unwritable(cache_dir / "tmp"):  # no temporary can be created
        client.put("k", "new", TTL)
        assert client.get("k", None) is None  # the old value was removed
        assert client.add("n", 1, TTL) is False
        assert client.get("j")[9] == 9.0  # reads go on
        assert client.stats.errors == 2
    client.put("k", "second", TTL)
    with unwritable(entry_path(client, "k").parent):  # entries there cannot change
        client.delete("k")
        client.put("k", "third", TTL)
        assert client.renew("k", 2 * TTL)  # in place: the file itself is writable
        assert client.stats.errors == 2 + 2  # the delete, and the put (old entry kept)
    with unwritable(cache_dir):
        client.clear()
        assert client.stats.errors == 5
    assert "not stored" in caplog.text and "cannot clear" in caplog.text
    assert list((cache_dir / "tmp").iterdir()) == []
    assert client.usage == disk_usage(cache_dir)
    client.put("k", "fourth", TTL)
    assert client.get("k") == "fourth"


# ---- configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"size": 0}, ValueError, "size"),
        ({"size": "1G"}, TypeError, "size"),
        ({"checksum_key": None}, ConfigurationError, "checksum_key"),
        ({"low_water": 1.5}, ConfigurationError, "low_water"),
        ({"low_water": 0}, ConfigurationError, "low_water"),
        ({"touch_interval": -1}, ValueError, "touch_interval"),
        ({"sweep_interval": "often"}, TypeError, "sweep_interval"),
        ({"file_mode": 0o400}, ConfigurationError, "file_mode"),
        ({"file_mode": "0600"}, TypeError, "file_mode"),
        ({"clock": 5}, TypeError, "clock"),
        ({"path": None}, TypeError, "path"),
        ({"path": ""}, ConfigurationError, "path"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_bad_configuration_names_the_option(cache_dir, kwargs, exc, match):
    options = {"path": cache_dir, "size": MB, "checksum_key": SECRET, **kwargs}
    with pytest.raises(exc, match=match):
        FilesCacheClient(**options)


def test_unencodable_key_names_the_key(client):
    with pytest.raises(TypeError, match=r"\[1, 2\]"):
        client.put([1, 2], 1, TTL)
    with pytest.raises(CacheMissError):
        client.get("absent")


def test_benchmark_module_runs(tmp_path, monkeypatch):
    from benchmarks import files as bench

    monkeypatch.setattr(bench, "ARRAY_BYTES", MB)  # a smoke run, not a measurement
    monkeypatch.setenv("CHORDE_BENCH_DIR", str(tmp_path))
    results = bench.run(quick=True)
    cells = {(r.operation, r.implementation) for r in results}
    assert len(cells) == len(results) == 12
    assert {impl for _, impl in cells} >= {"chorde.files", "pickle.load", "numpy.load"}
    assert all(r.ns_per_op and r.ns_per_op > 0 for r in results)
    assert list(tmp_path.iterdir()) == []  # its directory is removed afterwards
