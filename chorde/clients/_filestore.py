"""Internal: the on-disk entry format and the space accounting of FilesCacheClient.

Directory layout under the cache's ``path``::

    state                  the shared byte counter; also the writers' lock (flock)
    entries/ab/cdef...     one file per entry, named by a BLAKE2b digest of the encoded key
    tmp/<pid>.<rand>.<n>.tmp   entries being written; n is the bytes reserved for it
    trash-<rand>/          what clear() took away, being deleted

Entry file (integers little-endian)::

    offset  size  field
    0       4     magic b"CHFE"
    4       1     format version (1)
    5       1     kind (pickle, bytes, bytearray, memoryview, ndarray)
    6       2     zero
    8       4     header length H: the payload starts at H (a multiple of 64 for mapped kinds)
    12      4     length of the encoded cache key (K)
    16      4     length of the value description (M: dtype/format and shape)
    20      4     CRC-32 of the payload for the kinds read by copy (bytes, bytearray), else 0
    24      8     payload length P
    32      8     expires: absolute time.time() as an IEEE 754 double
    40      4     CRC-32 of the expires field, seeded with the header CRC
    44      4     header CRC: CRC-32 of bytes 0-31 and 48-H
    48      M     value description (ASCII)
    48+M    K     encoded cache key
    ...           zero padding up to H
    H       P     payload; the file is exactly H + P bytes long

Every header byte is checked on read, so a flipped bit there is a miss. Pickled payloads are
:class:`chorde.serialization.Serializer` payloads (HMAC-signed, verified before unpickling);
bytes payloads carry a CRC; mapped payloads (arrays, memoryviews) are NOT checksummed, since
hashing 100 MB on every read is exactly the cost they exist to avoid.

The expires field and its CRC are 12 contiguous bytes, so :meth:`renew`/:meth:`expire`
rewrite them in place with one ``pwrite``; a reader that races it sees the old or the new
value, or (in theory, if the kernel tore a 12-byte write) a CRC mismatch, which is a miss.

Space accounting. The ``state`` file holds the bytes in use: committed entries plus
reservations of temporaries being written. A writer reserves the exact size of its file
before writing it (evicting least recently used entries first when that would exceed the
bound), and releases the replaced entry's size when it renames over it. Those steps, the
renames, deletes and evictions run under an exclusive ``flock`` on ``state``, held for a few
system calls each, never while data is written; readers never take it. Every eviction and
every ``sweep_interval`` seconds the counter is recomputed from the directory, which also
removes temporaries whose writer died (their ``flock`` is free) and so corrects any drift a
killed process left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

try:
    import fcntl
except ImportError as exc:  # pragma: no cover - Windows
    raise ImportError("FilesCacheClient needs a POSIX system (fcntl, flock)") from exc

__all__: list[str] = []

MAGIC: Final = b"CHFE"
VERSION: Final = 1

KIND_PICKLE: Final = 1
KIND_BYTES: Final = 2
KIND_BYTEARRAY: Final = 3
KIND_MEMORYVIEW: Final = 4
KIND_NDARRAY: Final = 5
KINDS: Final = frozenset(range(1, 6))
MAPPED_KINDS: Final = frozenset((KIND_MEMORYVIEW, KIND_NDARRAY))

_FIXED: Final = struct.Struct("<4sBBxxIIIIQ")
_EXPIRY: Final = struct.Struct("<dI")
_HCRC: Final = struct.Struct("<I")
_DOUBLE: Final = struct.Struct("<d")
EXPIRY_OFFSET: Final = _FIXED.size  # 32
_PREFIX: Final = 48
_ALIGN: Final = 64
_MAX_HEADER: Final = 0xFFFFFFFF

_STATE: Final = struct.Struct("<8sqd")
_STATE_MAGIC: Final = b"CHFSTAT1"
_TMP_NAME: Final = re.compile(r"^\d+\.[0-9a-f]+\.(\d+)\.tmp$")


class Corrupt(Exception):
    """An entry file failed a check: a miss, never a value."""


@dataclass(slots=True)
class Header:
    """The parsed header of an entry file."""

    kind: int
    length: int
    payload_length: int
    payload_crc: int
    expires: float
    meta: bytes
    key: bytes
    crc: int


def pack_header(
    kind: int, key: bytes, meta: bytes, payload_length: int, payload_crc: int, expires: float
) -> bytes:
    """The header of an entry, padded so mapped payloads start 64-byte aligned."""
    length = _PREFIX + len(meta) + len(key)
    if kind in MAPPED_KINDS:
        length = -(-length // _ALIGN) * _ALIGN
    if length > _MAX_HEADER:
        raise ValueError(f"encoded key of {len(key)} bytes is too long for a file entry")
    fixed = _FIXED.pack(
        MAGIC, VERSION, kind, length, len(key), len(meta), payload_crc, payload_length
    )
    tail = meta + key + bytes(length - _PREFIX - len(meta) - len(key))
    crc = zlib.crc32(tail, zlib.crc32(fixed))
    return b"".join((fixed, pack_expiry(expires, crc), _HCRC.pack(crc), tail))


def pack_expiry(expires: float, header_crc: int) -> bytes:
    """The 12 bytes at ``EXPIRY_OFFSET``: expires and its CRC (bound to the header's)."""
    raw = _DOUBLE.pack(expires)
    return raw + struct.pack("<I", zlib.crc32(raw, header_crc))


def header_length(head: bytes, file_size: int) -> int:
    """The header length of an entry from its first 48 bytes; ``Corrupt`` if not an entry."""
    if len(head) < _PREFIX:
        raise Corrupt(f"truncated entry ({len(head)} bytes)")
    magic, version, _, length, *_ = _FIXED.unpack_from(head)
    if magic != MAGIC:
        raise Corrupt("not a chorde file entry (foreign format)")
    if version != VERSION:
        raise Corrupt(f"unsupported entry format version {version}")
    if not _PREFIX <= length <= file_size:
        raise Corrupt(f"bad header length {length} (file of {file_size} bytes)")
    return length


def parse_header(head: bytes, file_size: int) -> Header:
    """Check and parse an entry header; ``head`` holds at least its first H bytes."""
    length = header_length(head, file_size)
    if len(head) < length:
        raise Corrupt(f"truncated entry ({file_size} bytes)")
    _, _, kind, _, key_len, meta_len, pcrc, plen = _FIXED.unpack_from(head)
    crc = zlib.crc32(head[_PREFIX:length], zlib.crc32(head[:EXPIRY_OFFSET]))
    if _HCRC.unpack_from(head, 44)[0] != crc:
        raise Corrupt("header checksum mismatch")
    # Only now are the fields trustworthy (up to CRC-32 strength, against accidents).
    if kind not in KINDS:
        raise Corrupt(f"unknown entry kind {kind}")
    if _PREFIX + meta_len + key_len > length:
        raise Corrupt("header fields overflow the header")
    if any(head[_PREFIX + meta_len + key_len : length]):
        raise Corrupt("non-zero header padding")
    if length + plen != file_size:
        raise Corrupt(f"entry is {file_size} bytes, its header says {length + plen}")
    expires, ecrc = _EXPIRY.unpack_from(head, EXPIRY_OFFSET)
    if zlib.crc32(head[EXPIRY_OFFSET : EXPIRY_OFFSET + 8], crc) != ecrc:
        raise Corrupt("expiry checksum mismatch")
    meta = bytes(head[_PREFIX : _PREFIX + meta_len])
    key = bytes(head[_PREFIX + meta_len : _PREFIX + meta_len + key_len])
    return Header(kind, length, plen, pcrc, expires, meta, key, crc)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until all of ``data`` is written (large writes may be partial)."""
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    total = len(view)
    done = os.write(fd, view)
    if done < total:
        view = memoryview(view)
        while done < total:
            done += os.write(fd, view[done:])


def read_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``; ``Corrupt`` if the file is shorter."""
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    buf = bytearray(size)
    view = memoryview(buf)
    view[: len(data)] = data
    got = len(data)
    while got < size:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            raise Corrupt(f"entry shrank while read ({offset + got} of {offset + size} bytes)")
        got += n
    return bytes(buf)


# ---- the shared counter and the writers' lock -----------------------------------------

_stores: weakref.WeakSet[Store] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked child shares the parent's open file description of `state`, hence its flock,
    # and may inherit a thread lock held by a thread that does not exist here.
    for store in list(_stores):
        store._forget_state_fd()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Store:
    """The directory of a FilesCacheClient: paths, the shared counter, reservations, eviction."""

    def __init__(
        self,
        root: str,
        size: int,
        *,
        low_water: float,
        sweep_interval: float,
        file_mode: int,
        on_evict: Callable[[int], None],
    ) -> None:
        self.root = root
        self.size = size
        self.low_water = low_water
        self.sweep_interval = sweep_interval
        self.file_mode = file_mode
        # Directories get x wherever files get r.
        self.dir_mode = file_mode | (file_mode & 0o444) >> 2
        self._on_evict = on_evict
        self.entries = os.path.join(root, "entries")
        self.tmp = os.path.join(root, "tmp")
        self._state_path = os.path.join(root, "state")
        self._thread_lock = threading.Lock()
        self._fd = -1
        self._closed = False
        self._make_dirs()
        _stores.add(self)
        self._remove_trash()
        with self.locked() as fd:
            state = self._read_state(fd)
            now = time.time()
            if state is None or now - state[1] >= sweep_interval:
                used, _ = self._recount()
                self._write_state(fd, used, now)

    # -- paths ----------------------------------------------------------------------------

    def entry_path(self, digest: str) -> str:
        """Where the entry of a key with this hex digest lives."""
        return os.path.join(self.entries, digest[:2], digest[2:])

    def iter_entries(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every entry file and its stat, in no order (no lock: entries may come and go)."""
        try:
            fans = list(os.scandir(self.entries))
        except FileNotFoundError:
            return
        for fan in fans:
            try:
                with os.scandir(fan.path) as files:
                    for entry in files:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if not entry.is_dir(follow_symlinks=False):
                            yield entry.path, st
            except (FileNotFoundError, NotADirectoryError):
                continue

    def _make_dirs(self) -> None:
        for path in (self.root, self.entries, self.tmp):
            os.makedirs(path, mode=self.dir_mode, exist_ok=True)

    def _remove_trash(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                if entry.name.startswith("trash-") and entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)

    # -- the lock and the counter ---------------------------------------------------------

    def _state_fd(self) -> int:
        if self._fd < 0:
            if self._closed:
                raise ValueError("the FilesCacheClient is closed")
            self._fd = os.open(
                self._state_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.file_mode
            )
        return self._fd

    def _forget_state_fd(self) -> None:
        self._thread_lock = threading.Lock()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1

    @contextlib.contextmanager
    def locked(self) -> Iterator[int]:
        """Hold the writers' lock (threads of this process, then other processes)."""
        with self._thread_lock:
            fd = self._state_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield fd
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    @staticmethod
    def _read_state(fd: int) -> tuple[int, float] | None:
        raw = os.pread(fd, _STATE.size, 0)
        if len(raw) != _STATE.size:
            return None
        magic, used, last_sweep = _STATE.unpack(raw)
        return (used, last_sweep) if magic == _STATE_MAGIC else None

    @staticmethod
    def _write_state(fd: int, used: int, last_sweep: float) -> None:
        os.pwrite(fd, _STATE.pack(_STATE_MAGIC, max(used, 0), last_sweep), 0)

    def used(self) -> int:
        """Bytes in use now, reservations included (read without the lock; 0 once closed)."""
        if self._closed:
            return 0
        state = self._read_state(self._state_fd())
        return state[0] if state else 0

    def close(self) -> None:
        """Close the state file; the store must not be used afterwards."""
        with self._thread_lock:
            self._closed = True
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- writing --------------------------------------------------------------------------

    def reserve(self, nbytes: int) -> tuple[str, int] | None:
        """Reserve ``nbytes`` and open a locked temporary for them; None if they don't fit."""
        with self.locked() as sfd:
            state = self._read_state(sfd)
            used, last_sweep = state if state else (0, 0.0)
            now = time.time()
            if state is None or now - last_sweep >= self.sweep_interval:
                used, _ = self._recount()
                last_sweep = now
            if used + nbytes > self.size:
                used = self._evict(nbytes)
                last_sweep = now
                if used + nbytes > self.size:
                    self._write_state(sfd, used, last_sweep)
                    return None
            path = os.path.join(self.tmp, f"{os.getpid()}.{secrets.token_hex(6)}.{nbytes}.tmp")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            try:
                fd = os.open(path, flags, self.file_mode)
            except FileNotFoundError:  # the directory was removed under us
                self._make_dirs()
                fd = os.open(path, flags, self.file_mode)
            # Held until the file is renamed or removed: a temporary whose lock is free
            # belongs to a dead writer (see _sweep_temps).
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._write_state(sfd, used + nbytes, last_sweep)
        return path, fd

    def commit(
        self, tmp_path: str, fd: int, nbytes: int, path: str, refuse: Callable[[str], bool] | None
    ) -> bool:
        """Rename the temporary over ``path`` unless ``refuse(path)``; release the old size."""
        replaced = -1
        try:
            with self.locked() as sfd:
                used = self._read_state(sfd) or (0, 0.0)
                if refuse is not None and refuse(path):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp_path)
                    self._write_state(sfd, used[0] - nbytes, used[1])
                    return False
                # Holding the replaced file open defers freeing its blocks (slow for big
                # files) to the close below, after the lock is released.
                try:
                    replaced = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except (FileNotFoundError, NotADirectoryError):
                    replaced = -1
                old = os.fstat(replaced).st_size if replaced >= 0 else 0
                try:
                    os.rename(tmp_path, path)
                except FileNotFoundError:  # the fan-out directory is created lazily
                    os.makedirs(os.path.dirname(path), mode=self.dir_mode, exist_ok=True)
                    os.rename(tmp_path, path)
                self._write_state(sfd, used[0] - old, used[1])
                return True
        finally:
            os.close(fd)
            if replaced >= 0:
                os.close(replaced)

    def abort(self, tmp_path: str, fd: int, nbytes: int) -> None:
        """Remove a temporary and release its reservation."""
        try:
            with self.locked() as sfd:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_path)
                used, last_sweep = self._read_state(sfd) or (0, 0.0)
                self._write_state(sfd, used - nbytes, last_sweep)
        finally:
            os.close(fd)

    # -- removing -------------------------------------------------------------------------

    def remove(self, path: str, inode: int | None = None) -> bool:
        """Delete an entry (only if it is still ``inode``, when given); whether it was."""
        return self.remove_many([(path, inode)]) > 0

    def remove_many(self, doomed: list[tuple[str, int | None]]) -> int:
        """Delete entries (each only if still the given inode); how many were deleted."""
        if not doomed:
            return 0
        removed = 0
        with self.locked() as sfd:
            used, last_sweep = self._read_state(sfd) or (0, 0.0)
            for path, inode in doomed:
                try:
                    st = os.stat(path)
                    if inode is not None and st.st_ino != inode:
                        continue
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                used -= st.st_size
                removed += 1
            self._write_state(sfd, used, last_sweep)
        return removed

    def clear(self) -> None:
        """Remove every entry: the entries directory is swapped for an empty one."""
        trash = os.path.join(self.root, f"trash-{secrets.token_hex(8)}")
        with self.locked() as sfd:
            try:
                os.rename(self.entries, trash)
            except FileNotFoundError:
                trash = ""
            os.makedirs(self.entries, mode=self.dir_mode, exist_ok=True)
            self._write_state(sfd, self._sweep_temps(), time.time())
        if trash:
            shutil.rmtree(trash, ignore_errors=True)

    # -- recounting and eviction (under the lock) -----------------------------------------

    def _sweep_temps(self) -> int:
        """Delete temporaries of dead writers; return the bytes reserved by live ones."""
        live = 0
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            return 0
        for name in names:
            match = _TMP_NAME.match(name)
            if match is None:
                continue
            path = os.path.join(self.tmp, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            except OSError:  # another user's, unreadable: count it as live, to be safe
                live += int(match.group(1))
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live += int(match.group(1))
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            finally:
                os.close(fd)
        return live

    def _recount(self) -> tuple[int, list[tuple[int, int, str]]]:
        """Exact bytes in use, and every entry as ``(last access ns, size, path)``."""
        entries = [(st.st_mtime_ns, st.st_size, path) for path, st in self.iter_entries()]
        return self._sweep_temps() + sum(size for _, size, _ in entries), entries

    def _evict(self, need: int) -> int:
        """Evict least recently used entries to make room for ``need`` bytes; bytes in use."""
        used, entries = self._recount()
        target = max(self.size * self.low_water - need, 0)
        if used <= target:
            return used
        entries.sort()
        evicted = 0
        for _, size, path in entries:
            if used <= target:
                break
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError:
                # Not ours to delete (permissions): skip it; it still counts.
                continue
            used -= size
            evicted += 1
        if evicted:
            self._on_evict(evicted)
        return used
