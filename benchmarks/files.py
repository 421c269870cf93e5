"""FilesCacheClient: reading and writing a 100 MB float64 array, against the usual ways.

One 100 MB (13,107,200 float64) array is stored once per implementation in a fresh
temporary directory (``CHORDE_BENCH_DIR`` picks its parent; put it on a disk or a tmpfs to
compare), then read back repeatedly, with the file in the page cache:

* ``get``: what a call returns. chorde returns a read-only view of a memory map of the
  entry file, so this is a few system calls whatever the size; ``pickle.load`` and
  ``numpy.load`` read and copy all 100 MB. ``numpy.load(mmap_mode='r')`` maps the file too:
  it is the fair peer for the mapping itself (chorde adds key lookup, header checks, expiry
  and LRU bookkeeping).
* ``get+sum``: the same, then ``.sum()`` over the whole array, so every page is touched:
  the cost of actually using the data, page faults of the mapping included.
* ``put``: storing the array (chorde writes a temporary file and renames it into place).

The issue's target is ``get`` at least 10x faster than ``pickle.load``.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Result, TimingConfig, measure

__all__ = ["ARRAY_BYTES", "run"]

ARRAY_BYTES = 100 * 1024 * 1024
TTL = 3600
_BENCH = "files"
_KEY = "array"


def _chorde(directory: str, arr: Any) -> tuple[Any, dict[str, str]]:
    from chorde.clients.files import FilesCacheClient

    client = FilesCacheClient(
        os.path.join(directory, "chorde"), 4 * ARRAY_BYTES, checksum_key="benchmark"
    )
    client.put(_KEY, arr, TTL)
    return client, {"get": "c.get(k)", "get+sum": "c.get(k).sum()", "put": f"c.put(k, v, {TTL})"}


class _PickleFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def load(self, _key: Any) -> Any:
        with open(self.path, "rb") as f:
            return pickle.load(f)

    def dump(self, _key: Any, value: Any) -> None:
        with open(self.path, "wb") as f:
            pickle.dump(value, f, pickle.HIGHEST_PROTOCOL)


class _NpyFile:
    def __init__(self, path: str, mmap_mode: str | None) -> None:
        self.path = path
        self.mmap_mode = mmap_mode

    def load(self, _key: Any) -> Any:
        import numpy

        return numpy.load(self.path, mmap_mode=self.mmap_mode)

    def dump(self, _key: Any, value: Any) -> None:
        import numpy

        numpy.save(self.path, value)


def _pickle(directory: str, arr: Any) -> tuple[Any, dict[str, str]]:
    impl = _PickleFile(os.path.join(directory, "array.pickle"))
    impl.dump(_KEY, arr)
    return impl, {"get": "c.load(k)", "get+sum": "c.load(k).sum()", "put": "c.dump(k, v)"}


def _numpy(mmap_mode: str | None) -> Callable[[str, Any], tuple[Any, dict[str, str]]]:
    def make(directory: str, arr: Any) -> tuple[Any, dict[str, str]]:
        impl = _NpyFile(os.path.join(directory, f"array-{mmap_mode}.npy"), mmap_mode)
        impl.dump(_KEY, arr)
        return impl, {"get": "c.load(k)", "get+sum": "c.load(k).sum()", "put": "c.dump(k, v)"}

    return make


_IMPLEMENTATIONS: list[tuple[str, Callable[[str, Any], tuple[Any, dict[str, str]]]]] = [
    ("chorde.files", _chorde),
    ("pickle.load", _pickle),
    ("numpy.load", _numpy(None)),
    ("numpy.load(mmap_mode='r')", _numpy("r")),
]

_NOTES = {
    ("chorde.files", "get"): "returns a read-only memory-mapped view: no copy",
    ("numpy.load(mmap_mode='r')", "get"): "maps the .npy file: no copy, no cache semantics",
}


def run(quick: bool) -> list[Result]:
    """Measure get, get+sum and put of a 100 MB float64 array; see the module docstring."""
    try:
        import numpy
    except ImportError as exc:
        print(f"  files: skipped ({exc})", file=sys.stderr)
        return []
    config = TimingConfig.for_run(quick)
    arr = numpy.random.default_rng(7).random(ARRAY_BYTES // 8)
    expected = float(arr.sum())
    results: list[Result] = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("CHORDE_BENCH_DIR")) as directory:
        for name, make in _IMPLEMENTATIONS:
            impl, statements = make(directory, arr)
            read = impl.get if name.startswith("chorde") else impl.load
            if abs(float(read(_KEY).sum()) - expected) > 1e-6 * abs(expected):
                raise RuntimeError(f"{name} read back a different array")
            for operation in ("get", "get+sum", "put"):
                stmt = statements[operation]
                timing = measure(stmt, impl, [_KEY], config, value=arr)
                results.append(
                    Result.from_timing(
                        _BENCH,
                        operation,
                        name,
                        timing,
                        api=stmt,
                        note=_NOTES.get((name, operation), ""),
                    )
                )
            if hasattr(impl, "close"):
                impl.close()
    return results
