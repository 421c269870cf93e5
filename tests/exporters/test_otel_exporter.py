"""chorde.exporters.otel against the OpenTelemetry SDK: an InMemoryMetricReader collects
what the exporter reports."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("opentelemetry.sdk.metrics", reason="the otel extra (and the SDK)")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde.exporters import otel
from chorde.observe import hooks


@pytest.fixture
def reader():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider
    provider.shutdown()


def _points(reader, metric_name, **attributes):
    data = reader.get_metrics_data()
    points = []
    if data is None:  # nothing reported at all
        return points
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "chorde":
                continue
            for metric in scope.metrics:
                if metric.name == metric_name:
                    points += [
                        p
                        for p in metric.data.data_points
                        if all(p.attributes.get(k) == v for k, v in attributes.items())
                    ]
    return points


def test_counters_and_duration_histogram(reader):
    reader, provider = reader
    client = InprocCacheClient(100)

    @cached(client, ttl=300)
    def square(x):
        if x < 0:
            raise ValueError(x)
        return x * x

    exporter = otel.install(provider)
    try:
        square(3)
        square(3)
        square(3)
        with pytest.raises(ValueError):
            square(-1)
        name = f"{__name__}.test_counters_and_duration_histogram.<locals>.square"
        attrs = {"chorde.scope": "function", "chorde.name": name}
        [hits] = _points(reader, "chorde.cache.hits", **attrs)
        assert hits.value == 2
        [misses] = _points(reader, "chorde.cache.misses", **attrs)
        assert misses.value == 2
        [errors] = _points(reader, "chorde.cache.errors", **attrs)
        assert errors.value == 1
        [hit_durations] = _points(
            reader, "chorde.cache.duration", **attrs, **{"chorde.kind": "hit"}
        )
        assert hit_durations.count == 2 and hit_durations.sum >= 0
        [error_durations] = _points(
            reader, "chorde.cache.duration", **attrs, **{"chorde.kind": "error"}
        )
        assert error_durations.count == 1
    finally:
        exporter.uninstall()
    assert exporter.observe not in hooks()


async def test_async_and_counters_only(reader):
    reader, provider = reader
    client = InprocCacheClient(100)

    @cached(client, ttl=300)
    async def fetch(x):
        await asyncio.sleep(0)
        return x

    exporter = otel.install(provider, latency=False)
    assert exporter.observe not in hooks()
    await fetch(1)
    await fetch(1)
    name = f"{__name__}.test_async_and_counters_only.<locals>.fetch"
    [hits] = _points(reader, "chorde.cache.hits", **{"chorde.name": name})
    assert hits.value == 1
    assert _points(reader, "chorde.cache.duration") == []
    exporter.uninstall()
    assert _points(reader, "chorde.cache.hits", **{"chorde.name": name}) == []
