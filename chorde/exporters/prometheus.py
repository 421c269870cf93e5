"""chorde's counters and call durations as Prometheus metrics (``prometheus_client``).

::

    from chorde.exporters import prometheus

    exporter = prometheus.install()          # into prometheus_client's default registry
    # ... serve the registry as usual (prometheus_client.start_http_server, a WSGI app ...)
    exporter.uninstall()

Metrics, each labelled ``scope`` (``function`` or ``route``) and ``name`` (the function's
``module.qualname``, the route's name):

* counters ``chorde_cache_hits_total``, ``chorde_cache_misses_total``,
  ``chorde_cache_stale_total``, ``chorde_cache_refreshes_total``,
  ``chorde_cache_coalesced_total``, ``chorde_cache_errors_total``,
  ``chorde_cache_claims_total``: the fields of :class:`chorde.observe.CacheInfo`, read from
  every live cached function and route when the registry is collected;
* histogram ``chorde_cache_duration_seconds`` (also labelled ``kind``: ``hit``, ``miss``,
  ``stale``, ``refresh``, ``error``): the duration of every call, fed by a hook
  (``latency=False`` leaves it out, and the calls untimed). It is kept by the exporter
  itself, a few increments per call (no lock), and read when the registry is collected.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence

from chorde import observe
from chorde.errors import requires_extra

with requires_extra("prometheus"):
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["DEFAULT_BUCKETS", "PREFIX", "PrometheusExporter", "install"]

#: The first part of every metric name.
PREFIX = "chorde_cache"
#: Histogram buckets, in seconds: a hit of an in-process cache takes a microsecond, a
#: network round trip a millisecond, a computation anything.
DEFAULT_BUCKETS: tuple[float, ...] = (
    1e-6,
    1e-5,
    1e-4,
    5e-4,
    1e-3,
    5e-3,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
)
_FIELDS = tuple(f.name for f in dataclasses.fields(observe.CacheInfo))
_HELP = {
    "hits": "Calls answered from the cache with a live entry",
    "misses": "Calls that found nothing usable and computed (or waited for a computation)",
    "stale": "Calls answered with an entry past its ttl",
    "refreshes": "Background refreshes started",
    "coalesced": "Calls that waited for a computation another caller had started",
    "errors": "Computations that raised",
    "claims": "Computations run under a cluster-wide claim (coherent clients)",
}


class _Collector(Collector):
    """The counters, read from every live function and route when the registry is
    collected, and the duration histograms, kept here by the hook."""

    def __init__(self, prefix: str, buckets: Sequence[float] | None) -> None:
        self.prefix = prefix
        self.bounds = tuple(sorted(float(b) for b in buckets)) if buckets is not None else None
        if self.bounds is not None and (not self.bounds or not all(b > 0 for b in self.bounds)):
            raise ValueError(f"buckets must be upper bounds in seconds > 0, got {buckets!r}")
        # (scope, name, kind) -> [count per bucket..., count above the last bound, sum]
        self.histograms: dict[tuple[str, str, str], list[float]] = {}

    def observe(self, event: observe.Event) -> None:
        """The hook: one observation (plain increments, unlocked, like chorde's counters)."""
        key = (event.scope, event.name, event.kind)
        row = self.histograms.get(key)
        if row is None:
            assert self.bounds is not None
            row = self.histograms.setdefault(key, [0.0] * (len(self.bounds) + 2))
        duration = event.duration
        row[bisect.bisect_left(self.bounds, duration)] += 1  # type: ignore[arg-type]  # set
        row[-1] += duration

    def _counters(self) -> list[CounterMetricFamily]:
        return [
            CounterMetricFamily(f"{self.prefix}_{name}", _HELP[name], labels=("scope", "name"))
            for name in _FIELDS
        ]

    def _histogram(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(
            f"{self.prefix}_duration_seconds",
            "Duration of cached calls and background refreshes",
            labels=("scope", "name", "kind"),
        )

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        counters = self._counters()
        snapshot = sorted(observe.snapshot().items())
        for family, name in zip(counters, _FIELDS, strict=True):
            for labels, info in snapshot:
                family.add_metric(labels, getattr(info, name))
        yield from counters
        if self.bounds is None:
            return
        histogram = self._histogram()
        les = [_le(bound) for bound in (*self.bounds, math.inf)]
        for key, row in sorted(self.histograms.items()):
            cumulative = 0.0
            buckets = []
            for le, count in zip(les, row[:-1], strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            histogram.add_metric(key, buckets, row[-1])
        yield histogram

    def describe(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        yield from self._counters()
        if self.bounds is not None:
            yield self._histogram()


def _le(bound: float) -> str:
    # The text format's spelling of a bucket bound.
    return "+Inf" if math.isinf(bound) else repr(bound)


class PrometheusExporter:
    """What :func:`install` returns: the collector registered, and its hook installed."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        latency: bool = True,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        prefix: str = PREFIX,
    ) -> None:
        self.registry = registry
        self.collector = _Collector(prefix, buckets if latency else None)
        registry.register(self.collector)
        self.latency = latency
        if latency:
            observe.add_hook(self.collector.observe)

    def uninstall(self) -> None:
        """Remove the hook and unregister the metrics."""
        observe.remove_hook(self.collector.observe)
        with contextlib.suppress(KeyError):  # unregistered already
            self.registry.unregister(self.collector)


def install(
    registry: CollectorRegistry | None = None,
    *,
    latency: bool = True,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    prefix: str = PREFIX,
) -> PrometheusExporter:
    """Export chorde's metrics to ``registry`` (default: ``prometheus_client.REGISTRY``).

    ``latency=False``: the counters only, and no hook (calls stay untimed).
    """
    if registry is None:
        registry = prometheus_client.REGISTRY
    if not isinstance(prefix, str) or not prefix.isidentifier():
        raise ValueError(f"prefix must be a metric name prefix (an identifier), got {prefix!r}")
    return PrometheusExporter(registry, latency=latency, buckets=buckets, prefix=prefix)
