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

Space accounting. The ``state`` file holds the bytes in use, the number of reservations
pending and a dirty flag. Sizes are counted in whole filesystem blocks (``f_frsize``), as
``du`` counts them. Bytes in use are committed entries plus reservations of temporaries
being written: a writer reserves its file's size before writing it (evicting least
recently used entries first when that would exceed the bound) and the replaced entry's size
is released when the temporary is renamed over it. Those steps, the renames, deletes and
evictions run under an exclusive ``flock`` on ``state``, held for a few system calls each,
never while data is written; readers never take it.

What a killed process leaves behind is repaired without waiting:

* A writer killed while writing data leaves a temporary and its reservation. It holds an
  ``flock`` on its temporary until it renames or removes it, and the kernel drops that lock
  when the process dies, so the next reservation by any process (each process looks at
  most every 0.1 s) or the next ``usage`` read finds the temporary unlocked, deletes it
  and releases its reservation. The pid in the name is for people only: liveness is the
  lock, which knows nothing of pid reuse or pid namespaces. A forked child closes its
  copies of the temporaries its parent's other threads were writing.
* A process killed while holding the lock, between changing the directory and saving the
  counter, leaves the dirty flag set (it is set before every change and cleared by the
  save that ends it): the next holder of the lock rebuilds the counter from the directory.
* Opening a store rebuilds the counter (unless another process did less than a second
  ago), and so does every eviction and, at the latest, every ``sweep_interval`` seconds
  (drift from outside the protocol: files removed by hand, a host crash).

A process stopped (not dead) while it holds the lock, by SIGSTOP, a debugger or a frozen
container, would hang every writer of the host: waiting for the lock is given up after
``LOCK_TIMEOUT`` (5 s) and the call fails with ``TimeoutError``. A blocking ``flock`` cannot
be interrupted and polling for it costs a busy host much of its write throughput, so a
contended wait is handed to a thread of the process that blocks on the lock with its own
descriptor (the lock then belongs to that descriptor until the caller releases it).

Assumed: every process sharing the directory runs on one kernel (containers of one host
sharing a bind mount are fine; hosts sharing a network filesystem are not supported), and
all run this version of the format (a process of an older chorde on the same directory
makes every write rebuild the counter: upgrade them together).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
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

# state: magic, bytes used, reservations pending, time of the last rebuild, dirty flag.
_STATE: Final = struct.Struct("<8sqqdB7x")
_STATE_MAGIC: Final = b"CHFSTAT2"
_DIRTY_OFFSET: Final = 32
_TMP_NAME: Final = re.compile(r"^\d+\.[0-9a-f]+\.(\d+)\.tmp$")
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
#: Opening a store rebuilds the counter unless another process did less than this long ago
#: (seconds): processes started together scan the directory once, not once each.
_FRESH: Final = 1.0
#: A process's writes look for dead writers' temporaries at most this often (seconds): a
#: look opens each temporary, which under many concurrent writers costs more than a write.
_REAP_EVERY: Final = 0.1
#: How long a write (or delete, usage read...) waits for the writers' lock before it is
#: given up as failed (seconds). It is held for a few system calls, or for an eviction's scan.
LOCK_TIMEOUT: Final = 5.0


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
    return int(length)


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
    # A forked child shares the parent's open file descriptions of `state` and of the
    # temporaries other threads are writing, hence their flocks: it must drop its copies,
    # or a parent killed mid-write would look alive for as long as the child runs. It may
    # also inherit a thread lock held by a thread that does not exist here.
    for store in list(_stores):
        store._forget_fds()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Request:
    __slots__ = ("cancelled", "grant", "granted")

    def __init__(self) -> None:
        self.grant = threading.Lock()  # released by the waiter's thread when granted
        self.grant.acquire()
        self.granted = False
        self.cancelled = False


class _LockWaiter:
    """A thread that waits for the writers' ``flock`` for its process, on a descriptor of
    its own, so that a caller can give up after :data:`LOCK_TIMEOUT`.

    A blocking ``flock`` cannot be interrupted, and polling for it costs a contended host
    much of its write throughput; yet a holder that is stopped rather than dead (SIGSTOP, a
    debugger, a frozen container) must not hang every writer of the host. Started on the
    first contended acquisition only.
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._mutex = threading.Lock()
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="chorde-files-lock", daemon=True).start()

    def acquire(self, timeout: float) -> bool:
        """Take the lock on :attr:`fd` within ``timeout`` seconds; whether it was taken."""
        request = _Request()
        self._requests.put(request)
        try:
            if request.grant.acquire(timeout=max(timeout, 0)):
                return True
        except BaseException:  # KeyboardInterrupt: the lock must not stay taken for nobody
            with self._mutex:
                request.cancelled = True
                if request.granted:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
            raise
        with self._mutex:
            request.cancelled = not request.granted  # if so, released once it is taken
            return request.granted

    def stop(self) -> None:
        """End the thread (once it has the lock it may be waiting for); it closes :attr:`fd`."""
        self._requests.put(None)

    def _run(self) -> None:
        while (request := self._requests.get()) is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            with self._mutex:
                if not request.cancelled:
                    request.granted = True
                    request.grant.release()
                    continue
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _lock_timeout(holder: str) -> TimeoutError:
    return TimeoutError(
        errno.ETIMEDOUT, f"the writers' lock was held by {holder} for {LOCK_TIMEOUT} s"
    )


class Counter:
    """The shared counter, held with the writers' lock: ``with store._section() as c``.

    Entering takes the lock (threads of this process, then other processes) and reads the
    counter, rebuilding it from the directory when a holder died mid-change (or when the
    last rebuild is ``rebuild_after`` seconds old). Leaving saves it if it was changed. An
    exception leaves a marked counter dirty in the file for the next holder to rebuild:
    what the directory holds after a half-done change is only known there.
    """

    __slots__ = (
        "_lock",
        "_locked_fd",
        "_rebuild_after",
        "_store",
        "fd",
        "marked",
        "pending",
        "rebuilt",
        "used",
    )

    def __init__(self, store: Store, rebuild_after: float | None) -> None:
        self._store = store
        self._rebuild_after = rebuild_after
        self._lock = store._thread_lock
        self.fd = -1  # the state file, read and written through it
        self._locked_fd = -1  # the descriptor holding the flock (that one or the waiter's)
        #: Bytes of entry files (each rounded up to the filesystem block) plus reservations.
        self.used = 0
        #: Temporaries reserved and not yet renamed or removed (0: nothing to reap).
        self.pending = 0
        #: ``time.time()`` of the last rebuild from the directory.
        self.rebuilt = 0.0
        #: Whether the copy in the file is flagged dirty (a change is under way).
        self.marked = False

    def __enter__(self) -> Counter:
        store = self._store
        deadline = time.monotonic() + LOCK_TIMEOUT
        if not self._lock.acquire(timeout=LOCK_TIMEOUT):
            raise _lock_timeout("a thread of this process")
        try:
            self.fd = self._locked_fd = store._state_fd()
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waiter = store._lock_waiter()
                if not waiter.acquire(deadline - time.monotonic()):
                    raise _lock_timeout("another process") from None
                self._locked_fd = waiter.fd
        except BaseException:
            self._lock.release()
            raise
        try:
            raw = os.pread(self.fd, _STATE.size, 0)
            state = _STATE.unpack(raw) if len(raw) == _STATE.size else None
            if state is None or state[0] != _STATE_MAGIC or state[4]:
                # New, foreign, or left dirty by a process that died holding the lock.
                store._rebuild(self)
            else:
                self.used, self.pending, self.rebuilt = state[1:4]
                after = self._rebuild_after
                # abs(): a clock set back must not postpone rebuilds for as long.
                if after is not None and abs(time.time() - self.rebuilt) >= after:
                    store._rebuild(self)
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None and self.marked:
                self.save()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        try:
            fcntl.flock(self._locked_fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def mark(self) -> None:
        """Flag the file dirty before changing the directory: should this process die
        before :meth:`save`, the next holder of the lock rebuilds the counter."""
        if not self.marked:
            os.pwrite(self.fd, b"\x01", _DIRTY_OFFSET)
            self.marked = True

    def save(self) -> None:
        """Write the counter back, clean."""
        state = _STATE.pack(_STATE_MAGIC, max(self.used, 0), max(self.pending, 0), self.rebuilt, 0)
        os.pwrite(self.fd, state, 0)
        self.marked = False


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
        self._writing: set[int] = set()  # descriptors of this process's temporaries
        self._waiter: _LockWaiter | None = None
        self._next_reap = 0.0  # time.monotonic() of the next look for dead writers
        self._closed = False
        self._make_dirs()
        #: Space is counted in blocks of this size (the filesystem's allocation unit).
        self.block = max(os.statvfs(root).f_frsize, 1)
        _stores.add(self)
        self._remove_trash()
        # Rebuilt on open, unless another process just did (processes started together).
        try:
            with self._section(rebuild_after=_FRESH):
                pass
        except TimeoutError as exc:  # the next write rebuilds it if it must
            logging.getLogger("chorde.clients.files").warning(
                "chorde: the count of %s was not checked on open: %s", root, exc
            )

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

    def account(self, nbytes: int) -> int:
        """The space a file of ``nbytes`` takes, as counted: rounded up to whole blocks."""
        return -(-nbytes // self.block) * self.block

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

    def _forget_fds(self) -> None:
        self._thread_lock = threading.Lock()
        waiter_fd = self._waiter.fd if self._waiter is not None else -1
        for fd in (self._fd, waiter_fd, *self._writing):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = -1
        self._waiter = None  # its thread is not in this process
        self._writing = set()

    def _lock_waiter(self) -> _LockWaiter:
        if self._waiter is None:
            self._waiter = _LockWaiter(self._state_path)
            # A store dropped without close() must not leave its thread behind.
            weakref.finalize(self, self._waiter.stop)
        return self._waiter

    def _section(self, rebuild_after: float | None = None) -> Counter:
        """The writers' lock and the counter, as a context manager (see :class:`Counter`)."""
        return Counter(self, rebuild_after)

    def used(self) -> int:
        """Bytes in use now, reservations included, dead writers' released (0 once closed)."""
        if self._closed:
            return 0
        with self._section(rebuild_after=self.sweep_interval) as counter:
            self._reap(counter)
            return counter.used

    def close(self) -> None:
        """Close the state file; the store must not be used afterwards."""
        with self._thread_lock:
            self._closed = True
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._waiter is not None:
                self._waiter.stop()
                self._waiter = None

    # -- writing --------------------------------------------------------------------------

    def reserve(self, nbytes: int) -> tuple[str, int] | None:
        """Reserve ``nbytes`` (counted: see :meth:`account`) and open a locked temporary for
        them; None if they don't fit. Raises ``OSError`` (nothing reserved) if the
        temporary cannot be created."""
        with self._section(rebuild_after=self.sweep_interval) as counter:
            if counter.pending and time.monotonic() >= self._next_reap:
                self._reap(counter)
            if counter.used + nbytes > self.size:
                self._evict(counter, nbytes)
                if counter.used + nbytes > self.size:
                    return None
            path = os.path.join(self.tmp, f"{os.getpid()}.{secrets.token_hex(6)}.{nbytes}.tmp")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            counter.mark()
            try:
                try:
                    fd = os.open(path, flags, self.file_mode)
                except FileNotFoundError:  # the directory was removed under us
                    self._make_dirs()
                    fd = os.open(path, flags, self.file_mode)
            except OSError:
                counter.save()
                raise
            # Held until the file is renamed or removed: a temporary whose lock is free
            # belongs to a dead writer (see _reap). Taken under the writers' lock, like
            # every reaping, so no temporary is ever seen unlocked by mistake.
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._writing.add(fd)
            counter.used += nbytes
            counter.pending += 1
        return path, fd

    def commit(
        self, tmp_path: str, fd: int, nbytes: int, path: str, refuse: Callable[[str], bool] | None
    ) -> bool:
        """Rename the temporary over ``path`` unless ``refuse(path)``; release the old size.

        On ``OSError`` the temporary is removed and its reservation released."""
        replaced = -1
        try:
            with self._section() as counter:
                counter.mark()
                counter.pending -= 1
                if refuse is not None and refuse(path):
                    with contextlib.suppress(OSError):
                        os.unlink(tmp_path)
                    counter.used -= nbytes
                    return False
                # Holding the replaced file open defers freeing its blocks (slow for big
                # files) to the close below, after the lock is released.
                try:
                    replaced = os.open(path, os.O_RDONLY | os.O_CLOEXEC | _NOFOLLOW)
                except OSError:  # absent, or a planted symlink (ELOOP): renamed over
                    replaced = -1
                old = self.account(os.fstat(replaced).st_size) if replaced >= 0 else 0
                try:
                    try:
                        os.rename(tmp_path, path)
                    except FileNotFoundError:  # the fan-out directory is created lazily
                        os.makedirs(os.path.dirname(path), mode=self.dir_mode, exist_ok=True)
                        os.rename(tmp_path, path)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp_path)
                    counter.used -= nbytes
                    counter.save()
                    raise
                counter.used -= old
                return True
        finally:
            self._writing.discard(fd)
            os.close(fd)
            if replaced >= 0:
                os.close(replaced)

    def abort(self, tmp_path: str, fd: int, nbytes: int) -> None:
        """Remove a temporary and release its reservation."""
        try:
            with self._section() as counter:
                counter.mark()
                with contextlib.suppress(OSError):
                    os.unlink(tmp_path)
                counter.used -= nbytes
                counter.pending -= 1
        finally:
            self._writing.discard(fd)
            os.close(fd)

    # -- removing -------------------------------------------------------------------------

    def remove(self, path: str, inode: int | None = None) -> bool:
        """Delete an entry (only if it is still ``inode``, when given); whether it was."""
        return self.remove_many([(path, inode)]) > 0

    def remove_many(self, doomed: list[tuple[str, int | None]]) -> int:
        """Delete entries (each only if still the given inode); how many were deleted.

        An entry that cannot be deleted (permissions, read-only filesystem) is skipped and
        the first such error raised once the others are done."""
        if not doomed:
            return 0
        removed = 0
        error: OSError | None = None
        with self._section() as counter:
            for path, inode in doomed:
                try:
                    st = os.stat(path, follow_symlinks=False)
                    if inode is not None and st.st_ino != inode:
                        continue
                    counter.mark()
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError as exc:
                    error = error or exc
                    continue
                counter.used -= self.account(st.st_size)
                removed += 1
        if error is not None:
            raise error
        return removed

    def remove_unlocked(self, path: str) -> None:
        """Delete an entry without the writers' lock, when it cannot be had (a stopped
        holder): the count keeps its size until the next rebuild (over, never under)."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(path)

    def clear(self) -> None:
        """Remove every entry: the entries directory is swapped for an empty one."""
        trash = os.path.join(self.root, f"trash-{secrets.token_hex(8)}")
        with self._section() as counter:
            counter.mark()
            try:
                os.rename(self.entries, trash)
            except FileNotFoundError:
                trash = ""
            os.makedirs(self.entries, mode=self.dir_mode, exist_ok=True)
            counter.used, counter.pending = self._sweep_temps()
            counter.rebuilt = time.time()
        if trash:
            shutil.rmtree(trash, ignore_errors=True)

    def make_room(self, nbytes: int) -> int:
        """Evict least recently used entries for at least ``nbytes`` (counted) whatever the
        counter says: for a filesystem fuller than ``size`` assumes. Returns bytes freed."""
        with self._section() as counter:
            start = counter.used
            self._drop_lru(counter, self._scan(), lambda: start - counter.used >= nbytes)
            return start - counter.used

    # -- rebuilding, reaping and eviction (under the lock) ---------------------------------

    def _scan(self) -> list[tuple[int, int, str]]:
        """Every entry as ``(last access ns, counted size, path)``."""
        return [
            (st.st_mtime_ns, self.account(st.st_size), path) for path, st in self.iter_entries()
        ]

    def _rebuild(self, counter: Counter) -> list[tuple[int, int, str]]:
        """Recount from the directory (dead writers' temporaries removed); the entries."""
        counter.mark()
        live, pending = self._sweep_temps()
        entries = self._scan()
        counter.used = live + sum(size for _, size, _ in entries)
        counter.pending = pending
        counter.rebuilt = time.time()
        return entries

    def _temps(self) -> Iterator[tuple[str, int, bool]]:
        """Each temporary as ``(path, bytes reserved, whether its writer is alive)``."""
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            return
        for name in names:
            match = _TMP_NAME.match(name)
            if match is None:
                continue
            path = os.path.join(self.tmp, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | _NOFOLLOW)
            except FileNotFoundError:
                continue
            except OSError:  # another user's, unreadable: count it as live, to be safe
                yield path, int(match.group(1)), True
                continue
            try:
                # The writer's flock goes when its process does (whatever its pid or pid
                # namespace, and however soon the pid is reused), not before.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive = True
            else:
                alive = False
            finally:
                os.close(fd)
            yield path, int(match.group(1)), alive

    def _sweep_temps(self) -> tuple[int, int]:
        """Delete dead writers' temporaries; the bytes reserved by live ones, and how many."""
        live = count = 0
        for path, reserved, alive in self._temps():
            if alive:
                live += reserved
                count += 1
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return live, count

    def _reap(self, counter: Counter) -> None:
        """Delete dead writers' temporaries and release their reservations."""
        if counter.pending <= 0:
            return  # no reservation outstanding: nothing to look at
        self._next_reap = time.monotonic() + _REAP_EVERY
        for path, reserved, alive in self._temps():
            if alive:
                continue
            counter.mark()
            with contextlib.suppress(OSError):
                os.unlink(path)
            counter.used -= reserved
            counter.pending -= 1

    def _evict(self, counter: Counter, need: int) -> None:
        """Evict least recently used entries to leave room for ``need`` bytes under
        ``low_water`` of the size (after an exact recount)."""
        target = max(self.size * self.low_water - need, 0)
        entries = self._rebuild(counter)
        self._drop_lru(counter, entries, lambda: counter.used <= target)

    def _drop_lru(
        self, counter: Counter, entries: list[tuple[int, int, str]], enough: Callable[[], bool]
    ) -> None:
        entries.sort()
        evicted = 0
        for _, size, path in entries:
            if enough():
                break
            counter.mark()
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError:
                # Not ours to delete (permissions): skip it; it still counts.
                continue
            counter.used -= size
            evicted += 1
        if evicted:
            self._on_evict(evicted)
