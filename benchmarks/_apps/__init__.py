"""The small web apps ``benchmarks.apps`` serves: one per framework, one cached endpoint each.

Every app serves ``GET /page``, the same 2 KB HTML page (:data:`PAGE`), cached for an hour
by the implementation its environment names, and ``GET /ready`` (uncached, for start-up
polling). The page's view is made expensive on purpose (it sleeps :data:`VIEW_DELAY`) and
notes every run in the file ``BENCH_MISS_LOG`` names, so a configuration that misses shows
up both in its throughput and in the count the benchmark reads back.

Environment (set by the benchmark): ``BENCH_IMPL`` (which cache, see each app's
``CONFIGS``), ``BENCH_MEMCACHED`` (``host:port``), ``BENCH_REDIS`` (``host:port``),
``BENCH_MISS_LOG`` (a path).
"""

from __future__ import annotations

import os

__all__ = ["CHECKSUM_KEY", "PAGE", "TTL", "VIEW_DELAY", "impl", "memcached", "note_miss", "redis"]

#: Seconds a cached page lives: longer than any run, so every measured request is a hit.
TTL = 3600
#: What rendering the page costs on a miss (seconds).
VIEW_DELAY = 0.01
#: The signing secret of chorde's remote stacks.
CHECKSUM_KEY = "benchmark secret"


def _page() -> str:
    rows = "\n".join(
        f'<tr><td class="sku">item-{i:03d}</td><td>Product number {i}</td>'
        f'<td class="price">{(i * 7.31) % 100:.2f}</td></tr>'
        for i in range(22)
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>Catalogue</title></head>\n'
        f"<body><h1>Catalogue</h1>\n<table>\n{rows}\n</table>\n</body></html>\n"
    )


#: The endpoint's body, about 2 KB of HTML.
PAGE = _page()


def impl() -> str:
    """The implementation this process caches with (``BENCH_IMPL``)."""
    return os.environ["BENCH_IMPL"]


def memcached() -> str:
    """``host:port`` of the benchmark's memcached."""
    return os.environ["BENCH_MEMCACHED"]


def redis() -> str:
    """``host:port`` of the benchmark's redis-server."""
    return os.environ["BENCH_REDIS"]


def note_miss() -> None:
    """Record one run of the page's view (one line appended: atomic with O_APPEND)."""
    path = os.environ.get("BENCH_MISS_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
