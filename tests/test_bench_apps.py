"""Smoke test of ``benchmarks.apps``: one configuration under its real server, loaded by wrk.

Skipped when ``wrk`` is not installed (CI does not install it); no timing is asserted, only
that a run produces the three rows of figures from a server that served cached hits.
"""

from __future__ import annotations

import shutil

import pytest

from benchmarks import apps


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_quick_run_of_one_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    monkeypatch.setenv("CHORDE_BENCH_APPS", "fastapi:chorde-inproc")
    results = apps.run(quick=True)
    assert sorted(r.benchmark for r in results) == ["apps", "apps-cpu", "apps-p99"]
    for r in results:
        assert (r.operation, r.implementation) == ("fastapi, in-process", "chorde")
        assert r.ns_per_op is not None and r.ns_per_op > 0
        assert r.extra["rounds"] == 1
        assert r.extra["misses_during_rounds"] == 0  # every timed request was a hit
        assert r.extra["errors"] == []


def test_unknown_configuration_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORDE_BENCH_APPS", "fastapi:chorde-inproc,django:nope")
    with pytest.raises(ValueError, match="django:nope"):
        apps.run(quick=True)


def test_wrk_report_is_read() -> None:
    report = """Running 1s test @ http://127.0.0.1:1/page
  1 threads and 8 connections
  Latency Distribution
     50%  402.00us
     75%  513.00us
     90%    0.89ms
     99%    2.50ms
  18804 requests in 1.00s, 42.31MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:  18804.12
Transfer/sec:     42.31MB
"""
    figures = apps._parse_wrk(report)
    assert figures == {"requests": 18804, "rps": 18804.12, "p99_ns": 2.5e6, "errors": 6}
    with pytest.raises(RuntimeError, match="cannot read"):
        apps._parse_wrk("wrk: something else")
