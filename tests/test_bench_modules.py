"""Smoke tests of the memory, threads and legacy_put benchmark modules (issue 27).

Each runs ``run(quick=True)`` with its sizes shrunk to the least that still measures
something, and checks the shape of what comes back: every expected row, positive figures,
the notes the report relies on. No timing or memory figure is compared with anything.

The comparison with chorde 1.0.11 needs a venv that takes minutes to build from PyPI: here
it is never built (``CHORDE_BENCH_LEGACY_BUILD=0``), and the test against it runs only when
the venv exists already (``python -m benchmarks.legacy_put`` builds it); without it, the
module's skip row is checked instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import legacy_put, memory, threads
from benchmarks.harness import Result


def _cells(results: list[Result]) -> dict[tuple[str, str], Result]:
    return {(r.operation, r.implementation): r for r in results}


def test_memory_measures_every_implementation_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 20_000  # ~2 MB per cache: enough for the RSS delta to be well above a page
    monkeypatch.setattr(memory, "QUICK_ENTRIES", n)
    monkeypatch.setattr(memory, "QUICK_METHODS", memory.METHODS)  # both ways, as a full run
    results = memory.run(quick=True)
    cells = _cells(results)
    assert {r.benchmark for r in results} == {"memory"}
    for operation, _method in memory.METHODS:
        for name in memory.IMPLEMENTATIONS:
            r = cells[operation, name]
            assert r.ns_per_op is not None and r.ns_per_op > 0, (operation, name, r.note)
            assert r.extra["held"] > 0 and r.extra["entries"] == n
        for name in ("chorde", "chorde-lru-notouch", "lru.LRU", "dict"):
            assert cells[operation, name].extra["held"] == n
        assert "x lru.LRU" in cells[operation, "chorde"].note
        assert "goal <= 1.1x" in cells[operation, "chorde"].note
        assert cells[operation, "chorde [pure]"].extra["build"].startswith("pure")


def test_threads_measures_each_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "QUICK_OPS", 8 * threads.PUT_EVERY * 4)
    results = threads.run(quick=True)
    cells = _cells(results)
    for case in ("client", "@cached"):
        for n in threads.THREADS:
            label = f"{case}, {n} thread" + ("s" if n > 1 else "")
            for impl in ("chorde", "cachetools + Lock"):
                r = cells[label, impl]
                assert r.ns_per_op is not None and r.ns_per_op > 0
                assert r.extra["threads"] == n and all(x > 0 for x in r.extra["ops_per_s"])
        eight = cells[f"{case}, 8 threads", "chorde"]
        assert eight.extra["scaling_vs_1_thread"] > 0 and "8 threads / 1 thread" in eight.note


def test_threads_sequences_hold_one_put_in_ten() -> None:
    for n in threads.THREADS:
        sequences = threads._sequences(n, 4_000)
        assert len(sequences) == n
        for keys, puts in sequences:
            assert len(keys) == len(puts) == 4_000 // n
            assert sum(puts) * threads.PUT_EVERY == len(puts)
            assert all(0 <= k < threads.N_KEYS for k in keys)


def test_legacy_put_without_its_venv_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHORDE_BENCH_LEGACY_VENV", str(tmp_path / "absent"))
    monkeypatch.setenv("CHORDE_BENCH_LEGACY_BUILD", "0")
    results = legacy_put.run(quick=True)
    cells = _cells(results)
    for operation, _stmt, _keys in legacy_put._OPERATIONS:
        ours = cells[operation, "chorde"]
        assert ours.ns_per_op is not None and ours.ns_per_op > 0
        assert ours.extra["dict_get_ns"] > 0
        peer = cells[operation, f"chorde {legacy_put.LEGACY_VERSION}"]
        assert peer.ns_per_op is None
        assert peer.note.startswith("skipped: ") and "CHORDE_BENCH_LEGACY_BUILD=0" in peer.note


def test_legacy_put_against_1_0_11(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORDE_BENCH_LEGACY_BUILD", "0")
    python, why = legacy_put.legacy_python()
    if python is None:
        pytest.skip(f"{why}; `python -m benchmarks.legacy_put` builds it (minutes, from PyPI)")
    cells = _cells(legacy_put.run(quick=True))
    for operation, _stmt, _keys in legacy_put._OPERATIONS:
        peer = cells[operation, f"chorde {legacy_put.LEGACY_VERSION}"]
        assert peer.ns_per_op is not None and peer.ns_per_op > 0, peer.note
        assert peer.extra["raw_ns"] > 0 and peer.extra["ratio"] > 0
        # The peer is 1.0.11's compiled build, not its pure-Python fallback.
        assert peer.extra["inproc_file"].endswith(".so"), peer.extra["inproc_file"]
        assert peer.extra["store_file"].endswith(".so"), peer.extra["store_file"]
