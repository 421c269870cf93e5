"""Memory per entry: 1,000,000 entries (int key, short str value) in each in-process cache.

Every implementation is measured in a fresh child process (``python -m benchmarks.memory``),
so one measurement's freed-but-kept memory (allocator arenas, glibc's heap) cannot lower or
raise the next one's. The child imports what it needs, makes the keys (``0 .. n-1``) and the
values (``"v0000042"``: 8-character strs) first and keeps them alive, so only what the cache
itself adds is counted: its tables, nodes, links, entry tuples and expiry floats. Then it
builds the cache with room for exactly ``n`` entries, stores every key once and checks they
are all held.

Two figures per implementation, each from its own child:

* **RSS** (the figure the goals are judged on): the growth of the resident set
  (``/proc/self/statm``) over the fill, divided by the entries held. It is what the machine
  pays, allocator slack and fragmentation included, whoever allocates (Python's allocators,
  ``malloc``, a C extension's own arrays).
* **tracemalloc**: the growth of memory traced by :mod:`tracemalloc` over the fill (its own
  bookkeeping excluded). It sees every allocation made through Python's allocators, the
  compiled store's C arrays (``PyMem_Realloc``) and lru-dict's nodes and dict included, but
  no allocator slack; a cross-check on RSS (the two agree within a few bytes when nothing
  is lost to fragmentation).

chorde is measured in both builds in the same table: each store compiled (``chorde``,
``chorde-cuckoo``, ``chorde-lru-notouch``) and again with ``CHORDE_PURE_PYTHON=1``
(``... [pure]``). Peers: ``lru.LRU`` (lru-dict, a C LRU: the goal's yardstick),
``cachetools.TTLCache`` and ``cachetools.LRUCache``, Django's ``LocMemCache`` (stores each
value pickled, with an expiry dict beside its ``OrderedDict``: that is its design's cost),
and a plain ``dict`` (no order, no expiry: the floor). The table's ratio is peer bytes /
chorde (compiled default store) bytes, >1 when chorde is smaller; each row's note gives its
ratio to ``lru.LRU``. Goal (issue 27): the default store within 1.1x of ``lru.LRU``.

Figures are bytes per entry (in the ``ns_per_op`` field of the results; the table header
says ns/op for every benchmark). Memory does not depend on the machine's load: one child
per figure is enough. ``--quick`` uses 200,000 entries and RSS only.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Result

__all__ = [
    "FULL_ENTRIES",
    "IMPLEMENTATIONS",
    "METHODS",
    "QUICK_ENTRIES",
    "QUICK_METHODS",
    "TARGET",
    "run",
]

FULL_ENTRIES = 1_000_000
QUICK_ENTRIES = 200_000
TTL = 300
#: The default store's bytes at most this many times lru.LRU's.
TARGET = 1.1
_BENCH = "memory"
_REFERENCE = "lru.LRU"
_CHILD_TIMEOUT_S = 600
_ROOT = Path(__file__).resolve().parent.parent
#: Methods: (operation name, child's method argument).
METHODS = (("bytes/entry (RSS)", "rss"), ("bytes/entry (tracemalloc)", "tracemalloc"))
#: --quick measures RSS only (tracemalloc slows the fill down several times).
QUICK_METHODS = METHODS[:1]


# -- the child: one implementation, one method, one fresh process ---------------------------


def _chorde(store: str | None) -> Callable[[int], tuple[Any, Callable[[Any, int, Any], None]]]:
    def make(n: int) -> tuple[Any, Callable[[Any, int, Any], None]]:
        from chorde.clients.inproc import InprocCacheClient

        def put(c: Any, k: int, v: Any, _ttl: int = TTL) -> None:
            c.put(k, v, _ttl)

        return InprocCacheClient(n, store=store), put

    return make


def _setitem(c: Any, k: int, v: Any) -> None:
    c[k] = v


def _ttl_cache(n: int) -> tuple[Any, Callable[[Any, int, Any], None]]:
    import cachetools

    return cachetools.TTLCache(maxsize=n, ttl=TTL), _setitem


def _lru_cache(n: int) -> tuple[Any, Callable[[Any, int, Any], None]]:
    import cachetools

    return cachetools.LRUCache(maxsize=n), _setitem


def _lru_dict(n: int) -> tuple[Any, Callable[[Any, int, Any], None]]:
    import lru

    return lru.LRU(n), _setitem


def _locmem(n: int) -> tuple[Any, Callable[[Any, int, Any], None]]:
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.core.cache.backends.locmem import LocMemCache

    # MAX_ENTRIES above n: LocMemCache culls a third when it holds MAX_ENTRIES on a set.
    cache = LocMemCache("chorde-memory-benchmark", {"OPTIONS": {"MAX_ENTRIES": n + 1}})

    def put(c: Any, k: int, v: Any) -> None:
        c.set(k, v, TTL)

    return cache, put


def _dict(n: int) -> tuple[Any, Callable[[Any, int, Any], None]]:
    return {}, _setitem


def _held_get(c: Any, keys: list[int]) -> int:
    return sum(1 for k in keys if c.get(k, None) is not None)


def _held_mapping(c: Any, keys: list[int]) -> int:
    return sum(1 for k in keys if k in c)


#: name -> (builder, how to count the keys held, pure build?).
IMPLEMENTATIONS: dict[str, tuple[Callable[[int], Any], Callable[[Any, list[int]], int], bool]] = {
    "chorde": (_chorde(None), _held_get, False),
    "chorde-cuckoo": (_chorde("cuckoo"), _held_get, False),
    "chorde-lru-notouch": (_chorde("lru-notouch"), _held_get, False),
    "chorde [pure]": (_chorde(None), _held_get, True),
    "chorde-cuckoo [pure]": (_chorde("cuckoo"), _held_get, True),
    "chorde-lru-notouch [pure]": (_chorde("lru-notouch"), _held_get, True),
    "lru.LRU": (_lru_dict, _held_mapping, False),
    "cachetools.TTLCache": (_ttl_cache, _held_mapping, False),
    "cachetools.LRUCache": (_lru_cache, _held_mapping, False),
    "django.LocMemCache": (_locmem, _held_get, False),
    "dict": (_dict, _held_mapping, False),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(name: str, n: int, method: str) -> dict[str, Any]:
    """Fill one implementation with ``n`` entries in this (fresh) process; measure."""
    make, held, _pure = IMPLEMENTATIONS[name]
    make(1)  # imports and one-time setup, before the baseline
    keys = list(range(n))
    values = [f"v{i:07d}" for i in keys]
    import tracemalloc

    if method == "tracemalloc":
        tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else _rss_bytes()
    cache, put = make(n)
    for k, v in zip(keys, values, strict=True):
        put(cache, k, v)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else _rss_bytes()
    if method == "tracemalloc":
        tracemalloc.stop()
    count = held(cache, keys)
    build = ""
    if name.startswith("chorde"):
        from chorde import _speedups

        build = _speedups.status(("chorde.clients.inproc",))["chorde.clients.inproc"]
    return {"bytes": after - before, "held": count, "build": build}


# -- the parent ------------------------------------------------------------------------------


def _measure(name: str, n: int, method: str) -> dict[str, Any]:
    pure = IMPLEMENTATIONS[name][2]
    env = {k: v for k, v in os.environ.items() if k != "CHORDE_PURE_PYTHON"}
    if pure:
        env["CHORDE_PURE_PYTHON"] = "1"
    cmd = [sys.executable, "-m", "benchmarks.memory", name, str(n), method]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=_CHILD_TIMEOUT_S, cwd=_ROOT, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name}: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool) -> list[Result]:
    """Measure every implementation both ways; see the module docstring."""
    n = QUICK_ENTRIES if quick else FULL_ENTRIES
    methods = QUICK_METHODS if quick else METHODS
    figures: dict[tuple[str, str], dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in IMPLEMENTATIONS:
        for operation, method in methods:
            if name in skipped:
                break
            try:
                figures[operation, name] = _measure(name, n, method)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                skipped[name] = str(exc)
                print(f"  memory: {name} skipped ({exc})", file=sys.stderr)
    results: list[Result] = []
    for operation, _method in methods:
        ref = figures.get((operation, _REFERENCE))
        ref_per_entry = ref["bytes"] / ref["held"] if ref and ref["held"] else None
        for name in IMPLEMENTATIONS:
            doc = figures.get((operation, name))
            if doc is None:
                results.append(
                    Result(_BENCH, operation, name, None, note=skipped.get(name, "not measured"))
                )
                continue
            per_entry = doc["bytes"] / doc["held"] if doc["held"] else None
            notes = [f"{doc['held']:,} of {n:,} entries held"]
            extra: dict[str, Any] = {"entries": n, **doc}
            if per_entry and ref_per_entry:
                ratio = per_entry / ref_per_entry
                extra["ratio_to_lru_dict"] = ratio
                notes.append(f"{ratio:.2f}x lru.LRU")
                if name == "chorde":
                    notes.append(f"goal <= {TARGET}x: {'met' if ratio <= TARGET else 'SHORT'}")
            if doc["build"]:
                notes.append(f"inproc {doc['build']}")
            results.append(
                Result(
                    _BENCH,
                    operation,
                    name,
                    per_entry,
                    ops=n,
                    note=", ".join(notes),
                    extra=extra,
                )
            )
    return results


if __name__ == "__main__":  # the child: python -m benchmarks.memory NAME N METHOD
    print(json.dumps(_child(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
