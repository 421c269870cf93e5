"""``benchmarks/starlette.py`` runs end to end (quick mode) and reports every case."""

from __future__ import annotations

from benchmarks import starlette as bench
from tests.servers import find_memcached


def test_quick_run_reports_every_case() -> None:
    results = bench.run(quick=True)
    names = [r.implementation for r in results]
    expected = ["chorde-inproc hit", "static endpoint", "20 ms handler, bypassed"]
    if find_memcached() is not None:
        expected.append("chorde-memcached hit")
    assert names == expected
    for r in results:
        assert r.benchmark == "starlette"
        assert r.ns_per_op is not None and r.ns_per_op > 0
        assert "x static" in r.note or r.implementation == "static endpoint"
