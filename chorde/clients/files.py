"""A host-wide cache in a directory: one file per entry, shared by every process on the host.

Usage::

    from chorde.clients.files import FilesCacheClient

    c = FilesCacheClient("/dev/shm/myapp-cache", 512 * 1024 * 1024, checksum_key="secret")
    c.put("features", big_array, 3600)
    view = c.get("features")  # a read-only numpy array mapped from the file: no copy

Values
    * numpy arrays (plain ``ndarray``, fixed-size unstructured dtypes) are stored raw, after
      a header describing dtype, order and shape, and read back as **read-only views of a
      memory map** of the entry file: a get costs a few system calls whatever the size, no
      copy, no unpickling, no hash. numpy is only imported when an array is stored or read
      (``pip install 'chorde[shmem]'``).
    * ``memoryview`` values are stored raw too and come back as read-only memoryviews of a
      memory map, with their format and shape when the format is a native single-character
      struct code (otherwise as unsigned bytes).
    * ``bytes`` and ``bytearray`` are stored raw and read back as a copy of their own type,
      with a CRC-32 check.
    * Anything else is pickled and signed with :class:`chorde.serialization.Serializer`:
      the HMAC is checked before unpickling, so a foreign or corrupted file is a miss,
      never unpickled. ``checksum_key`` is required for that reason.

    Raw payloads carry no signature: they are never unpickled, and their header (dtype,
    shape, length, key) is checked on every read, but the array bytes themselves are not
    hashed. Whoever can write into ``path`` can change the numbers you read, so give the
    directory the permissions of the data (``file_mode``, 0o600 by default).

Where entries live
    ``path/entries/xx/<digest>``: the file name is a BLAKE2b digest of the key's
    :func:`chorde.keys.encode_key` encoding; the encoded key is stored in the entry and
    compared on read, so a collision or a file moved under another name is a miss. Put the
    directory on ``/dev/shm`` (or another tmpfs) for a cache in shared memory, on a disk for
    one that survives reboots. POSIX only (``fcntl``, rename over open files). Do not edit
    the files by other means: truncating a file someone has mapped makes their process
    crash with SIGBUS on access.

Writes are atomic
    A value is written to ``path/tmp/`` and renamed over the entry, so a reader sees the old
    entry or the new one, never a mix, and a writer killed half-way leaves only a temporary.
    Entries are not fsync'ed: after a host crash on a disk-backed directory, call
    :meth:`clear`.

Views outlive replacement
    A value returned as a view keeps its file's old inode alive: if the entry is then
    replaced, evicted, deleted or cleared, the reader keeps seeing the value it got (POSIX
    keeps an unlinked file until its last mapping goes away), and its disk or shared memory
    is freed when the view is garbage-collected. That space is not counted in
    :attr:`usage`. Each live view also holds one file descriptor (before Python 3.13).

Expiry
    Entries carry an absolute wall-clock expiry (``time.time()``: every process on the host
    reads the same clock). :meth:`getTtl` returns stale entries with a negative ttl until
    they are purged or evicted; :meth:`renew` and :meth:`expire` rewrite the 12-byte expiry
    field of the entry in place.

Size bound
    ``size`` bounds the space of all entry files plus the temporaries being written, each
    counted in whole filesystem blocks (as ``du`` counts them): space is reserved before a
    value is written, evicting least recently used entries (by a last-access stamp that
    reads refresh at most every ``touch_interval`` seconds) down to ``low_water`` of
    ``size``. Reservations, renames and evictions take a short exclusive ``flock``; reads
    take no lock. An eviction lists and stats the whole directory under that lock
    (milliseconds per thousand entries), which ``low_water`` makes rare: each one frees a
    tenth of ``size`` by default. A value larger than ``size`` is a ``ValueError``.

Killed processes
    A writer killed mid-write leaves a temporary and a reservation; both are reclaimed by
    the next write of any process (at most 0.1 s later) or the next :attr:`usage` read: its
    ``flock`` on the temporary went with it, whatever became of its pid. A process killed
    while changing the directory under the lock leaves the counter flagged dirty, and the
    next one to take the lock recounts the directory. Opening a client recounts too (unless
    another process just did), and so does every eviction and, at the latest, the first
    write after ``sweep_interval`` seconds. A process stopped (SIGSTOP, a frozen container)
    while holding the lock delays other writers by 5 s at most: the write is then dropped,
    and a delete (or the removal of a failed put's old entry) is done without the lock. The
    processes must share one kernel: containers of one host sharing the directory are fine,
    hosts sharing a network filesystem are not.

Faults
    A read that fails (I/O error, unreadable or corrupt file) is a miss. A write that fails
    is dropped: ``put`` returns normally, ``add`` returns False, the failure is counted in
    ``stats.errors`` and logged (at most once a minute per kind), and a failed ``put`` or
    ``expire`` removes the key's old entry, so an older value is never served in place of
    the one that could not be written. A full filesystem (``ENOSPC``, ``EDQUOT``: it holds
    more than ``size`` leaves room for) first makes the write evict least recently used
    entries for its own size and try once more. ``delete``, ``renew``, ``clear`` and
    ``purge`` log and count what they could not do; none raises for a filesystem fault.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import math
import mmap
import os
import struct
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from chorde.clients import _filestore as fs
from chorde.clients.base import BaseCacheClient, CacheStats, Key, check_capacity, check_ttl
from chorde.errors import CacheMissError, ConfigurationError
from chorde.keys import encode_key
from chorde.sentinel import NONE
from chorde.serialization import InvalidPayload, RateLimitedLog, Serializer

__all__ = ["FilesCacheClient"]

logger = logging.getLogger("chorde.clients.files")

# The first read of an entry: the header, and the whole of a small entry.
_READ_AHEAD = 4096
# Entries read by copy up to this size are read whole in one more call.
_READ_WHOLE = 64 * 1024
# Pickled payloads above this are verified and unpickled straight from a memory map.
_MAP_PICKLES_FROM = 1024 * 1024
_CASTABLE_FORMATS = frozenset("bBhHiIlLqQnNfd?c")
_DIGEST_PERSON = b"chorde.files"
# Entries are regular files; a symlink planted in the directory is not followed.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | _NOFOLLOW
_MMAP_KW: dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}
# A full filesystem (or quota): worth evicting for, once.
_NO_SPACE = frozenset((errno.ENOSPC, errno.EDQUOT))

_EncodedValue = tuple[int, bytes, Sequence[bytes | memoryview], int, int]


def _digest(encoded: bytes) -> str:
    return hashlib.blake2b(encoded, digest_size=20, person=_DIGEST_PERSON).hexdigest()


def _memoryview_parts(value: memoryview) -> tuple[bytes, memoryview | bytes]:
    """(description, bytes) of a memoryview stored raw."""
    data: memoryview | bytes
    if value.c_contiguous:
        try:
            data = value.cast("B")
        except (TypeError, ValueError):
            data = value.tobytes()
    else:
        data = value.tobytes()
    fmt = value.format.removeprefix("@")
    if fmt in _CASTABLE_FORMATS and value.nbytes and value.ndim:
        shape = ",".join(map(str, value.shape or ()))
        return f"{fmt};{shape}".encode("ascii"), data
    return f"B;{value.nbytes}".encode("ascii"), data


def _memoryview_from(mapped: mmap.mmap, start: int, length: int, meta: bytes) -> memoryview:
    try:
        fmt, shape_text = meta.decode("ascii").split(";")
        shape = [int(n) for n in shape_text.split(",")]
        itemsize = struct.calcsize(fmt)
    except (UnicodeDecodeError, ValueError, struct.error) as exc:
        raise fs.Corrupt(f"bad memoryview description {meta!r}: {exc}") from None
    if fmt not in _CASTABLE_FORMATS or math.prod(shape) * itemsize != length:
        raise fs.Corrupt(f"memoryview description {meta!r} does not match {length} bytes")
    view = memoryview(mapped)[start : start + length]
    if fmt == "B" and len(shape) == 1:
        return view
    # The format is only known at run time (checked against _CASTABLE_FORMATS above).
    return view.cast(fmt, shape)  # type: ignore[call-overload, no-any-return]  # see above


class FilesCacheClient(BaseCacheClient):
    """A cache shared by the processes of one host, in a directory; see the module docstring.

    ``path`` is the cache directory (created if needed), ``size`` its bound in bytes, and
    ``checksum_key`` the secret (or list of secrets, for rotation) signing pickled values.
    Options:

    * ``compress`` / ``compress_threshold``: zlib-compress pickles above the threshold.
    * ``touch_interval``: how stale a last-access stamp may get before a read refreshes it
      (seconds, default 1; 0 refreshes on every read).
    * ``low_water``: eviction frees space down to this fraction of ``size`` (default 0.9),
      so that scans are amortised over many writes.
    * ``sweep_interval``: at most this long (seconds, default 600) between recounts of the
      directory, which correct the shared byte counter from whatever was done to the
      directory by other means (dead writers are reclaimed without waiting for it).
    * ``file_mode``: permissions of entry files (default 0o600; directories get ``x`` where
      files get ``r``). Processes of several users can share a cache with 0o660 and a group.
    * ``clock``: the wall clock expiry is measured with (``time.time``); every process
      sharing the directory must use the same one.

    A client pickles as its configuration, ``checksum_key`` included, so it can be passed
    to spawned worker processes, which open the same directory.
    """

    blocking = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: int,
        checksum_key: str | bytes | Sequence[str | bytes] | None = None,
        *,
        compress: bool = True,
        compress_threshold: int = 1024,
        touch_interval: float = 1.0,
        low_water: float = 0.9,
        sweep_interval: float = 600.0,
        file_mode: int = 0o600,
        clock: Callable[[], float] = time.time,
        **legacy: Any,
    ) -> None:
        if legacy or isinstance(path, int):  # 1.x's (size, basepath) order, or its options
            from chorde import _legacy

            path, size, file_mode = _legacy.files_arguments(path, size, file_mode, legacy)
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a directory path, got {path!r}")
        path = os.fspath(path)
        if not path:
            raise ConfigurationError("path must not be empty")
        size = check_capacity(size, "size")
        touch_interval = check_ttl(touch_interval, "touch_interval")
        sweep_interval = check_ttl(sweep_interval, "sweep_interval")
        if isinstance(low_water, bool) or not isinstance(low_water, int | float):
            raise TypeError(f"low_water must be a fraction of size, got {low_water!r}")
        if not 0 < low_water <= 1:
            raise ConfigurationError(f"low_water must be in (0, 1], got {low_water!r}")
        if isinstance(file_mode, bool) or not isinstance(file_mode, int):
            raise TypeError(f"file_mode must be an int such as 0o600, got {file_mode!r}")
        if not 0o400 <= file_mode <= 0o777 or not file_mode & 0o200:
            raise ConfigurationError(
                f"file_mode must give the owner read and write (0o600..0o777), got {file_mode:#o}"
            )
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        if checksum_key is None:
            raise ConfigurationError(
                "checksum_key is required: pickled values are signed with it and verified "
                "before they are unpickled"
            )
        self._config = {
            "path": path,
            "size": size,
            "checksum_key": checksum_key,
            "compress": compress,
            "compress_threshold": compress_threshold,
            "touch_interval": touch_interval,
            "low_water": low_water,
            "sweep_interval": sweep_interval,
            "file_mode": file_mode,
            "clock": clock,
        }
        self._serializer = Serializer(
            checksum_key,
            compress=compress,
            compress_threshold=compress_threshold,
            max_size=size,
        )
        self._size = size
        self._clock = clock
        self._touch_ns = int(touch_interval * 1e9)
        self._log = RateLimitedLog(logger)
        self._hits = self._misses = self._sets = self._evictions = self._errors = 0
        try:
            self._store = fs.Store(
                path,
                size,
                low_water=float(low_water),
                sweep_interval=sweep_interval,
                file_mode=file_mode,
                on_evict=self._count_evictions,
            )
        except OSError as exc:
            raise ConfigurationError(
                f"path {path!r} is not usable as a cache directory: {exc}"
            ) from exc

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its configuration (checksum_key included), so it can be handed to a
        # spawned worker process, which opens the same directory.
        return _rebuild, (self._config,)

    def _count_evictions(self, n: int) -> None:
        self._evictions += n

    @property
    def path(self) -> str:
        """The cache directory."""
        return self._store.root

    # ---- locating and decoding entries -------------------------------------------------

    def _locate(self, key: Key) -> tuple[bytes, str]:
        encoded = encode_key(key)
        return encoded, self._store.entry_path(_digest(encoded))

    def _bad(self, key: Key, path: str, reason: object) -> None:
        self._errors += 1
        self._log.warning("chorde: unusable cache file %s for key %r: %s", path, key, reason)

    def _open_header(
        self, fd: int, encoded: bytes, full: bool = False
    ) -> tuple[fs.Header, bytes, os.stat_result]:
        st = os.fstat(fd)
        head = os.pread(fd, min(st.st_size, _READ_AHEAD), 0)
        length = fs.header_length(head, st.st_size)
        if length > len(head):
            head = fs.read_exact(fd, length, 0)
        header = fs.parse_header(head, st.st_size)
        if header.key != encoded:
            raise fs.Corrupt("the file belongs to another key")
        if len(head) < st.st_size <= _READ_WHOLE and full and header.kind not in fs.MAPPED_KINDS:
            head = fs.read_exact(fd, st.st_size, 0)
        return header, head, st

    def _read(self, key: Key, live_only: bool) -> tuple[Any, float] | None:
        """``(value, expires)``, or None for a miss (or a stale entry when ``live_only``)."""
        encoded, path = self._locate(key)
        try:
            fd = os.open(path, _READ_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self._bad(key, path, exc)
            return None
        try:
            header, head, st = self._open_header(fd, encoded, full=True)
            if live_only and header.expires <= self._clock():
                return None
            value = self._decode(fd, header, head, encoded)
            self._touch(fd, st)
            return value, header.expires
        except fs.Corrupt as exc:
            self._bad(key, path, exc)
            return None
        except InvalidPayload as exc:
            self._bad(key, path, exc.reason)
            return None
        except OSError as exc:
            self._bad(key, path, exc)
            return None
        finally:
            os.close(fd)

    def _decode(self, fd: int, header: fs.Header, head: bytes, encoded: bytes) -> Any:
        start, length, kind = header.length, header.payload_length, header.kind
        if kind == fs.KIND_PICKLE:
            if start + length <= len(head):
                return self._serializer.loads(head, key=encoded, offset=start)[0]
            if length < _MAP_PICKLES_FROM:
                return self._serializer.loads(fs.read_exact(fd, length, start), key=encoded)[0]
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ, **_MMAP_KW)
            try:
                # loads reads any buffer; a view of the map spares a copy of the payload.
                payload = cast(bytes, memoryview(mapped)[start:])
                return self._serializer.loads(payload, key=encoded)[0]
            finally:
                # If a view escaped, the map goes away with it instead.
                with contextlib.suppress(BufferError):
                    mapped.close()
        if kind in (fs.KIND_BYTES, fs.KIND_BYTEARRAY):
            data = head[start:] if start + length <= len(head) else None
            if data is None:
                data = fs.read_exact(fd, length, start)
            if zlib.crc32(data) != header.payload_crc:
                raise fs.Corrupt("payload checksum mismatch")
            return bytes(data) if kind == fs.KIND_BYTES else bytearray(data)
        if kind == fs.KIND_NDARRAY:
            from chorde import shmem  # raises the ImportError naming the extra

            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ, **_MMAP_KW)
            try:
                return shmem.array_from_buffer(mapped, start, length, header.meta)
            except ValueError as exc:
                raise fs.Corrupt(str(exc)) from None
        # KIND_MEMORYVIEW
        if length == 0:
            return memoryview(b"")
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ, **_MMAP_KW)
        return _memoryview_from(mapped, start, length, header.meta)

    def _touch(self, fd: int, st: os.stat_result) -> None:
        now = time.time_ns()
        if now - st.st_mtime_ns <= self._touch_ns:
            return
        try:
            os.utime(fd, ns=(now, now))
        except PermissionError:
            # Setting explicit times needs ownership; "now" only needs write permission.
            with contextlib.suppress(OSError):
                os.utime(fd)
        except OSError:
            pass

    def _encode(self, value: Any, encoded: bytes) -> _EncodedValue:
        """``(kind, description, payload chunks, payload length, payload crc)``."""
        t = type(value)
        if t is bytes or t is bytearray:
            kind = fs.KIND_BYTES if t is bytes else fs.KIND_BYTEARRAY
            return kind, b"", (value,), len(value), zlib.crc32(value)
        if t is memoryview:
            meta, data = _memoryview_parts(value)
            return fs.KIND_MEMORYVIEW, meta, (data,), len(data), 0
        numpy = sys.modules.get("numpy")  # an array implies numpy is already imported
        if numpy is not None and isinstance(value, numpy.ndarray):
            from chorde import shmem

            described = shmem.describe(value)
            if described is not None:
                meta, data = described
                return fs.KIND_NDARRAY, meta, (data,), data.nbytes, 0
        payload = self._serializer.dumps(value, key=encoded, expires=0.0)
        return fs.KIND_PICKLE, b"", (payload,), len(payload), 0

    # ---- reads -------------------------------------------------------------------------

    def getTtl(self, key: Key, default: Any = NONE) -> tuple[Any, float]:
        """Return ``(value, ttl_left)``; stale entries come back with ``ttl_left <= 0``."""
        found = self._read(key, live_only=False)
        if found is not None:
            self._hits += 1
            return found[0], found[1] - self._clock()
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default, -1.0

    def get(self, key: Key, default: Any = NONE) -> Any:
        """Return the live value for ``key``, ``default`` if given, else raise a miss."""
        found = self._read(key, live_only=True)
        if found is not None and found[1] > self._clock():
            self._hits += 1
            return found[0]
        self._misses += 1
        if default is NONE:
            raise CacheMissError(key)
        return default

    def _header_of(self, key: Key, writable: bool = False) -> tuple[fs.Header, int] | None:
        """The header of ``key``'s entry and an open descriptor (caller closes), or None."""
        encoded, path = self._locate(key)
        try:
            fd = os.open(path, (os.O_RDWR | _NOFOLLOW if writable else _READ_FLAGS) | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self._bad(key, path, exc)
            return None
        try:
            return self._open_header(fd, encoded)[0], fd
        except (fs.Corrupt, OSError) as exc:
            os.close(fd)
            self._bad(key, path, exc)
            return None
        except BaseException:
            os.close(fd)
            raise

    def contains(self, key: Key, ttl: float | None = None) -> bool:
        """True if ``key`` has a live entry (with more than ``ttl`` seconds left, if given)."""
        found = self._header_of(key)
        if found is None:
            return False
        os.close(found[1])
        return found[0].expires - self._clock() > (ttl or 0)

    # ---- writes ------------------------------------------------------------------------

    def _write(self, key: Key, value: Any, ttl: float, only_if_absent: bool) -> bool:
        ttl = check_ttl(ttl)
        encoded, path = self._locate(key)
        kind, meta, chunks, length, crc = self._encode(value, encoded)
        header = fs.pack_header(kind, encoded, meta, length, crc, self._clock() + ttl)
        total = self._store.account(len(header) + length)
        if total > self._size:
            raise ValueError(
                f"value for key {key!r} takes {total} bytes on disk, more than the cache "
                f"size {self._size}"
            )
        refuse = (lambda p: self._live_at(p, encoded)) if only_if_absent else None
        try:
            try:
                stored = self._write_file(path, header, chunks, total, refuse)
            except OSError as exc:
                if exc.errno not in _NO_SPACE:
                    raise
                # The filesystem is fuller than `size` assumes (other files, views still
                # mapped): make room for this value, whatever the counter says, once.
                self._store.make_room(total)
                stored = self._write_file(path, header, chunks, total, refuse)
        except OSError as exc:
            return self._failed(key, path, only_if_absent, exc)
        if stored is None:
            why = f"no room for {total} bytes (writes in progress hold it)"
            return self._failed(key, path, only_if_absent, why)
        if stored:
            self._sets += 1
        return stored

    def _write_file(
        self,
        path: str,
        header: bytes,
        chunks: Sequence[bytes | memoryview],
        total: int,
        refuse: Callable[[str], bool] | None,
    ) -> bool | None:
        """Write an entry through a temporary: stored, refused, or None when no room."""
        reserved = self._store.reserve(total)
        if reserved is None:
            return None
        tmp_path, fd = reserved
        try:
            fs.write_all(fd, header)
            for chunk in chunks:
                fs.write_all(fd, chunk)
            now = time.time_ns()
            os.utime(fd, ns=(now, now))
        except BaseException:
            self._store.abort(tmp_path, fd, total)
            raise
        return self._store.commit(tmp_path, fd, total, path, refuse)

    def _failed(self, key: Key, path: str, was_add: bool, reason: object) -> bool:
        """A write that could not be made: counted, logged, and, for a put, the key's old
        entry removed, so that no older value is served in place of the one not written."""
        self._errors += 1
        self._log.warning(
            "chorde: key %r not stored in %s: %s",
            key,
            self._store.root,
            reason,
            kind=f"not stored: {getattr(reason, 'errno', 'no room')}",  # one line per cause
        )
        if not was_add:
            try:
                self._remove(path, locked=not isinstance(reason, TimeoutError))
            except OSError as exc:
                self._log.warning("chorde: cannot remove the old entry %s: %s", path, exc)
        return False

    def _remove(self, path: str, locked: bool = True) -> None:
        if locked:
            try:
                self._store.remove(path)
                return
            except TimeoutError as exc:
                self._log.warning("chorde: %s; %s removed without it", exc, path)
        # The writers' lock is held by a stopped process: remove the entry all the same, or
        # the value it holds would outlive a delete or a newer write.
        self._store.remove_unlocked(path)

    def _live_at(self, path: str, encoded: bytes) -> bool:
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError:
            return False
        try:
            header = self._open_header(fd, encoded)[0]
        except (fs.Corrupt, OSError):
            return False
        finally:
            os.close(fd)
        return header.expires > self._clock()

    def put(self, key: Key, value: Any, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any entry."""
        self._write(key, value, ttl, only_if_absent=False)

    def add(self, key: Key, value: Any, ttl: float) -> bool:
        """Store only if the key has no live entry (atomic across processes)."""
        return self._write(key, value, ttl, only_if_absent=True)

    def _set_expiry(self, key: Key, expires: Callable[[float], float]) -> bool:
        check = self._header_of(key, writable=True)
        if check is None:
            return False
        header, fd = check
        try:
            os.pwrite(fd, fs.pack_expiry(expires(header.expires), header.crc), fs.EXPIRY_OFFSET)
        finally:
            os.close(fd)
        return True

    def renew(self, key: Key, ttl: float) -> bool:
        """Keep an existing entry (stale or not) alive at least ``ttl`` seconds from now: an
        expiry already later stays."""
        ttl = check_ttl(ttl)
        now = self._clock()
        try:
            return self._set_expiry(key, lambda old: max(old, now + ttl))
        except OSError as exc:  # a read-only or failing filesystem
            self._bad(key, self._locate(key)[1], exc)
            return False

    def expire(self, key: Key) -> None:
        """Mark the entry stale now, keeping its value for ``getTtl`` (not ``get``)."""
        now = self._clock()
        try:
            if self._set_expiry(key, lambda old: min(old, now)) or not self.contains(key):
                return
        except OSError as exc:
            self._bad(key, self._locate(key)[1], exc)
        self.delete(key)  # a value that could not be marked stale must not stay live

    def delete(self, key: Key) -> None:
        """Remove the entry for ``key``, if any."""
        path = self._locate(key)[1]
        try:
            self._remove(path)
        except OSError as exc:
            self._bad(key, path, exc)

    def clear(self) -> None:
        """Remove every entry (views already handed out stay valid)."""
        try:
            self._store.clear()
        except OSError as exc:
            self._errors += 1
            self._log.warning("chorde: cannot clear the cache in %s: %s", self.path, exc)

    def purge(self, timeout: float = 0) -> None:
        """Remove entries that expired more than ``timeout`` seconds ago, and corrupt files."""
        timeout = check_ttl(timeout, "timeout")
        now = self._clock()
        doomed: list[tuple[str, int | None]] = []
        for path, st in self._store.iter_entries():
            try:
                fd = os.open(path, _READ_FLAGS)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                st = os.fstat(fd)
                inode = st.st_ino
                head = os.pread(fd, min(st.st_size, _READ_AHEAD), 0)
                length = fs.header_length(head, st.st_size)
                if length > len(head):
                    head = fs.read_exact(fd, length, 0)
                expires = fs.parse_header(head, st.st_size).expires
            except fs.Corrupt:
                expires = -math.inf
            except OSError:
                continue
            finally:
                os.close(fd)
            if expires + timeout < now:
                doomed.append((path, inode))
        try:
            self._store.remove_many(doomed)
        except OSError as exc:
            self._errors += 1
            self._log.warning("chorde: cannot purge %s: %s", self.path, exc)

    # ---- attributes --------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """The size bound, in bytes."""
        return self._size

    @property
    def usage(self) -> int:
        """Bytes held by entries and writes in progress, from every process, counted in
        filesystem blocks (dead writers' reservations are released first)."""
        try:
            return self._store.used()
        except OSError as exc:
            self._errors += 1
            self._log.warning("chorde: cannot read the usage of %s: %s", self.path, exc)
            return 0

    @property
    def stats(self) -> CacheStats:
        """This process's counters (evictions: those this process performed)."""
        return CacheStats(self._hits, self._misses, self._sets, self._evictions, self._errors)

    def close(self) -> None:
        """Release the state file; views already handed out stay valid."""
        self._store.close()


def _rebuild(config: dict[str, Any]) -> FilesCacheClient:
    return FilesCacheClient(**config)


if not TYPE_CHECKING:  # (type checkers keep flagging unknown names)

    def __getattr__(name: str) -> Any:
        # chorde 1.x's names here: what replaced them (see chorde._legacy).
        from chorde import _legacy

        return _legacy.attribute(__name__, name)
