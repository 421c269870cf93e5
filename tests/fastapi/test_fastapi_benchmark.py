"""``benchmarks/fastapi.py`` runs end to end (quick mode) and reports every case."""

from __future__ import annotations

from benchmarks import fastapi as bench
from tests.servers import find_memcached


def test_quick_run_reports_every_case() -> None:
    results = bench.run(quick=True)
    backends = ["inproc", "memcached"] if find_memcached() is not None else ["inproc"]
    expected = [(b, "chorde hit") for b in backends] + [(b, "static endpoint") for b in backends]
    expected.append(("inproc", "20 ms handler, bypassed"))
    assert [(r.operation.split()[0], r.implementation) for r in results] == expected
    for r in results:
        assert r.benchmark == "fastapi"
        assert r.ns_per_op is not None and r.ns_per_op > 0
        assert "req/s" in r.note
        if r.implementation == "chorde hit":
            assert "x the static endpoint" in r.note and "target" in r.note
