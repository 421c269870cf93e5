"""chorde.exporters.prometheus against prometheus_client: a real scrape of the text format
over HTTP, parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

pytest.importorskip("prometheus_client", reason="the prometheus extra")

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde.exporters import prometheus
from chorde.observe import hooks
from tests.servers import free_port


@pytest.fixture
def registry():
    return prometheus_client.CollectorRegistry()


def _scrape(registry):
    """GET /metrics from a real prometheus_client HTTP server on a loopback port."""
    port = free_port()
    server, thread = prometheus_client.start_http_server(port, "127.0.0.1", registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/plain")
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families, metric, sample_name, **labels):
    for sample in families[metric].samples:
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no {sample_name} {labels} in {families[metric].samples}")


def test_counters_and_durations_in_a_scrape(registry):
    client = InprocCacheClient(100)

    @cached(client, ttl=300, namespace="prom.area")
    def area(w, h):
        if w < 0:
            raise ValueError(w)
        return w * h

    exporter = prometheus.install(registry)
    try:
        area(2, 3)
        area(2, 3)
        area(2, 3)
        with pytest.raises(ValueError):
            area(-1, 1)
        families = _scrape(registry)
    finally:
        exporter.uninstall()
    name = f"{__name__}.test_counters_and_durations_in_a_scrape.<locals>.area"
    labels = {"scope": "function", "name": name}
    assert _value(families, "chorde_cache_hits", "chorde_cache_hits_total", **labels) == 2
    assert _value(families, "chorde_cache_misses", "chorde_cache_misses_total", **labels) == 2
    assert _value(families, "chorde_cache_errors", "chorde_cache_errors_total", **labels) == 1
    duration = "chorde_cache_duration_seconds"
    assert _value(families, duration, duration + "_count", kind="hit", **labels) == 2
    assert _value(families, duration, duration + "_count", kind="miss", **labels) == 1
    assert _value(families, duration, duration + "_count", kind="error", **labels) == 1
    assert _value(families, duration, duration + "_bucket", kind="hit", le="+Inf", **labels) == 2
    assert _value(families, duration, duration + "_sum", kind="miss", **labels) > 0
    # The buckets are cumulative and end with every observation.
    buckets = [
        s.value
        for s in families[duration].samples
        if s.name.endswith("_bucket") and s.labels["kind"] == "hit" and s.labels["name"] == name
    ]
    assert buckets == sorted(buckets) and buckets[-1] == 2


async def test_async_functions_and_uninstall(registry):
    client = InprocCacheClient(100)

    @cached(client, ttl=300)
    async def fetch(x):
        await asyncio.sleep(0)
        return x

    exporter = prometheus.install(registry, latency=False)
    assert exporter.collector.observe not in hooks()  # counters only: calls stay untimed
    await fetch(1)
    await fetch(1)
    families = _scrape(registry)
    name = f"{__name__}.test_async_functions_and_uninstall.<locals>.fetch"
    assert _value(families, "chorde_cache_hits", "chorde_cache_hits_total", name=name) == 1
    assert "chorde_cache_duration_seconds" not in families
    exporter.uninstall()
    assert "chorde_cache_hits" not in _scrape(registry)


def test_bad_options(registry):
    with pytest.raises(ValueError, match="prefix"):
        prometheus.install(registry, prefix="bad prefix")
    with pytest.raises(ValueError, match="buckets"):
        prometheus.install(registry, buckets=[0, 1])
