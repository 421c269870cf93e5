"""Exporters of chorde's counters and timings to monitoring systems (optional extras).

* :mod:`chorde.exporters.prometheus` (``pip install 'chorde[prometheus]'``):
  ``install()`` adds chorde's counters to a ``prometheus_client`` registry and times every
  call into a histogram.
* :mod:`chorde.exporters.otel` (``pip install 'chorde[otel]'``): the same as OpenTelemetry
  metrics (``opentelemetry-api``).

Both read what :mod:`chorde.observe` gathers: the counters of every cached function and
route (read when the metrics are collected, so they cost the calls nothing) and, through a
hook, the duration of every call.
"""

from __future__ import annotations

__all__: list[str] = []
