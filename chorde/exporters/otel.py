"""chorde's counters and call durations as OpenTelemetry metrics (``opentelemetry-api``).

::

    from chorde.exporters import otel

    exporter = otel.install()      # the global MeterProvider (or meter_provider=...)
    exporter.uninstall()

Instruments of the meter ``chorde``, each observation with the attributes
``chorde.scope`` (``function`` or ``route``) and ``chorde.name`` (the function's
``module.qualname``, the route's name):

* observable counters ``chorde.cache.hits``, ``chorde.cache.misses``,
  ``chorde.cache.stale``, ``chorde.cache.refreshes``, ``chorde.cache.coalesced``,
  ``chorde.cache.errors``, ``chorde.cache.claims``: the fields of
  :class:`chorde.observe.CacheInfo`, read from every live cached function and route when the
  metrics are collected;
* histogram ``chorde.cache.duration`` (seconds; also ``chorde.kind``: ``hit``, ``miss``,
  ``stale``, ``refresh``, ``error``): the duration of every call, recorded by a hook
  (``latency=False`` leaves it out, and the calls untimed).

The SDK (``opentelemetry-sdk``) or another implementation of the API does the exporting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from chorde import __version__, observe
from chorde.errors import requires_extra

with requires_extra("otel"):
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["METER", "OtelExporter", "install"]

#: The meter's name (the instrumentation scope).
METER = "chorde"
_FIELDS = tuple(f.name for f in dataclasses.fields(observe.CacheInfo))
_DESCRIPTIONS = {
    "hits": "Calls answered from the cache with a live entry",
    "misses": "Calls that found nothing usable and computed (or waited for a computation)",
    "stale": "Calls answered with an entry past its ttl",
    "refreshes": "Background refreshes started",
    "coalesced": "Calls that waited for a computation another caller had started",
    "errors": "Computations that raised",
    "claims": "Computations run under a cluster-wide claim (coherent clients)",
}


class OtelExporter:
    """What :func:`install` returns: the instruments, and the hook feeding the histogram."""

    def __init__(self, meter_provider: MeterProvider, *, latency: bool = True) -> None:
        self.meter = meter_provider.get_meter(METER, __version__)
        self.installed = True
        for name in _FIELDS:
            self.meter.create_observable_counter(
                f"chorde.cache.{name}",
                callbacks=[self._callback(name)],
                unit="{call}",
                description=_DESCRIPTIONS[name],
            )
        self.histogram = None
        self._attributes: dict[tuple[str, str, str], dict[str, str]] = {}
        if latency:
            self.histogram = self.meter.create_histogram(
                "chorde.cache.duration",
                unit="s",
                description="Duration of cached calls and background refreshes",
            )
            observe.add_hook(self.observe)

    def _callback(self, name: str) -> Any:
        def observations(options: CallbackOptions) -> Iterable[Observation]:
            if not self.installed:
                return []
            return [
                Observation(getattr(info, name), {"chorde.scope": scope, "chorde.name": label})
                for (scope, label), info in observe.snapshot().items()
            ]

        return observations

    def observe(self, event: observe.Event) -> None:
        """The hook: one histogram record per event."""
        histogram = self.histogram
        if histogram is None:
            return
        key = (event.scope, event.name, event.kind)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._attributes.setdefault(
                key, {"chorde.scope": key[0], "chorde.name": key[1], "chorde.kind": key[2]}
            )
        histogram.record(event.duration, attributes)

    def uninstall(self) -> None:
        """Remove the hook; the counters report nothing from now on (OpenTelemetry has no
        way to withdraw an instrument)."""
        observe.remove_hook(self.observe)
        self.installed = False
        self.histogram = None


def install(meter_provider: MeterProvider | None = None, *, latency: bool = True) -> OtelExporter:
    """Export chorde's metrics through ``meter_provider`` (default: the global one).

    ``latency=False``: the counters only, and no hook (calls stay untimed).
    """
    if meter_provider is None:
        meter_provider = metrics.get_meter_provider()
    return OtelExporter(meter_provider, latency=latency)
