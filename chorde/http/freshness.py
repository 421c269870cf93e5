"""How long a response stays fresh, and how old it is when it arrives.

RFC 9111 section 4.2 (explicit and heuristic freshness, age), RFC 5861 (serving stale).
Pure functions over parsed fields; the policy (:mod:`chorde.http.rules`) decides with them.
"""

from __future__ import annotations

from chorde.http.fields import CacheControl, delta_seconds, http_date

__all__ = [
    "corrected_initial_age",
    "explicit_lifetime",
    "heuristic_lifetime",
    "stale_extensions",
]


def explicit_lifetime(
    cc: CacheControl, expires: list[str], date: list[str], shared: bool, now: float
) -> float | None:
    """The explicit freshness lifetime (RFC 9111 section 4.2.1), None when there is none.

    A shared cache takes ``s-maxage`` first; then ``max-age``; then ``Expires`` minus
    ``Date``. An invalid or conflicting value means "already stale" (0), as do two
    ``Expires`` lines and an ``Expires`` that is not an HTTP-date (section 5.3).
    """
    for directive in ("s-maxage", "max-age") if shared else ("max-age",):
        seconds = cc.seconds(directive)
        if seconds is not None:
            return float(seconds)
    if not expires:
        return None
    when = http_date(expires[0], now) if len(expires) == 1 else None
    if when is None:
        return 0.0
    sent = http_date(date[0], now) if len(date) == 1 else None
    return max(0.0, when - (sent if sent is not None else now))


def heuristic_lifetime(
    last_modified: list[str], date: list[str], now: float, fraction: float, cap: float
) -> float | None:
    """A heuristic lifetime (RFC 9111 section 4.2.2): ``fraction`` of the time since
    ``Last-Modified`` (at most ``cap``), None without a valid Last-Modified."""
    if len(last_modified) != 1 or fraction <= 0:
        return None
    modified = http_date(last_modified[0], now)
    if modified is None:
        return None
    sent = http_date(date[0], now) if len(date) == 1 else None
    since = (sent if sent is not None else now) - modified
    return min(cap, fraction * since) if since > 0 else None


def corrected_initial_age(
    age: list[str], date: list[str], requested_at: float, responded_at: float
) -> float | None:
    """The response's age when it arrived (RFC 9111 section 4.2.3); None when ``Age`` is
    invalid (the response is then treated as stale).

    The larger of the apparent age (arrival time minus ``Date``) and the ``Age`` it came
    with plus the time the request took. Of several ``Age`` lines the first counts.
    """
    age_value = 0.0
    if age:
        first = delta_seconds(age[0].strip())
        if first is None:
            return None
        age_value = float(first)
    sent = http_date(date[0], responded_at) if len(date) == 1 else None
    apparent = max(0.0, responded_at - sent) if sent is not None else 0.0
    response_delay = max(0.0, responded_at - requested_at)
    return max(apparent, age_value + response_delay)


def stale_extensions(cc: CacheControl) -> tuple[float, float]:
    """``(stale-while-revalidate, stale-if-error)`` seconds the response grants (RFC 5861);
    an invalid value grants nothing."""
    return (
        float(delta_seconds(cc.get("stale-while-revalidate")) or 0),
        float(delta_seconds(cc.get("stale-if-error")) or 0),
    )
