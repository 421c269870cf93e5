"""The ``Cache-Status`` response field (RFC 9211): how a cache handled a request.

One list member per cache, the cache's name followed by parameters: ``hit`` when the
answer came from the cache without going forward, else ``fwd`` (why it went forward:
``uri-miss``, ``vary-miss``, ``stale``, ``request``, ``bypass``, ``method``) with
``fwd-status`` (the status the next hop answered), ``stored`` (whether that answer was
stored), ``ttl`` (seconds of freshness left, negative when stale), ``key`` and ``detail``.
"""

from __future__ import annotations

import re

__all__ = ["FIELD", "cache_status", "check_name"]

#: The field's name, lower-case as ASGI carries names.
FIELD = b"cache-status"
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")


def check_name(name: str, option: str = "cache_status") -> str:
    """A cache name usable as a Cache-Status member (a token, RFC 8941)."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ValueError(f"{option} must be a token naming the cache, like 'chorde': {name!r}")
    return name


def _string(text: str) -> str:
    cleaned = "".join(c for c in text if " " <= c <= "~")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cache_status(
    name: str,
    *,
    hit: bool = False,
    fwd: str | None = None,
    fwd_status: int | None = None,
    stored: bool | None = None,
    ttl: float | None = None,
    key: str | None = None,
    detail: str | None = None,
) -> bytes:
    """One ``Cache-Status`` member, as field-value bytes."""
    parts = [name]
    if hit:
        parts.append("hit")
    if fwd is not None:
        parts.append(f"fwd={fwd}")
    if fwd_status is not None:
        parts.append(f"fwd-status={fwd_status}")
    if stored is not None:
        parts.append("stored" if stored else "stored=?0")
    if ttl is not None:
        parts.append(f"ttl={int(ttl)}")
    if key is not None:
        parts.append(f"key={_string(key)}")
    if detail is not None:
        parts.append(f"detail={_string(detail)}")
    return "; ".join(parts).encode("latin-1")
