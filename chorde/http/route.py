"""What one route declares about its responses, for the response-cache policy."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COOKIE_PREFIX", "CREDENTIAL_FIELDS", "DEFAULT_ROUTE", "Route", "check_wait_timeout"]

_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_NAME = _FIELD_NAME  # RFC 6265 cookie-name is a token too
#: Pseudo field names: the value of one cookie (a real field name cannot contain ':').
COOKIE_PREFIX = "cookie:"
#: The request fields a per-user route is keyed on.
CREDENTIAL_FIELDS = ("authorization", "cookie")


def check_wait_timeout(value: Any) -> float:
    """A wait in seconds: finite and >= 0 (0: concurrent misses never wait)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"wait_timeout must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"wait_timeout must be finite and >= 0 seconds, got {value!r}")
    return float(value)


def _names(value: Any, option: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise TypeError(f"{option} must be a list of names, not a single string: {value!r}")
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(f"{option} must be a list of names, got {value!r}") from None
    for name in names:
        if not isinstance(name, str) or not pattern.fullmatch(name):
            raise ValueError(f"{option}: {name!r} is not a valid name")
    return names


@dataclass(frozen=True, slots=True)
class Route:
    """How one route's responses may be cached: what it declares about itself.

    * ``ttl``: seconds a response is kept (None: the cache's default); the response's own
      freshness (``max-age`` ...) can only shorten it.
    * ``public``: the route's responses are the same for every user, so requests with
      ``Authorization`` or cookies are answered from, and stored in, the shared entry.
    * ``per_user``: the responses depend on the user's credentials: each distinct
      ``Authorization``/``Cookie`` gets its own entry (a private cache's rules, RFC 9111
      section 5.2.2.7: a ``private`` response is stored for its user).
    * ``vary``: request fields the responses depend on besides those the response lists in
      its own ``Vary`` (``("Accept-Language",)``): their values go into the key.
    * ``cookies``: the only cookies the responses depend on: their values go into the key,
      and requests carrying cookies are served (other cookies do not matter).
    * ``query``: whether the query string is part of the key (default True).
    * ``wait_timeout``: how long concurrent misses of one page wait for the first one's
      render, in seconds (None: the cache's; 0: they never wait, each renders its own).
    * ``name``: what the route's counters and events are reported under (adapters name it
      after the view; None: ``"default"``).
    """

    ttl: float | None = None
    public: bool = False
    per_user: bool = False
    # Any sequence of names (adapters pass theirs on as given); kept as a tuple.
    vary: Sequence[str] = ()
    cookies: Sequence[str] = ()
    query: bool = True
    wait_timeout: float | None = None
    name: str | None = field(default=None, compare=False)
    #: The request fields every variant of this route is keyed on (derived).
    keyed_on: tuple[str, ...] = field(default=(), init=False, compare=False)

    def __post_init__(self) -> None:
        if self.ttl is not None:
            if isinstance(self.ttl, bool) or not isinstance(self.ttl, numbers.Real):
                raise TypeError(f"ttl must be a number of seconds, got {self.ttl!r}")
            if math.isnan(self.ttl) or self.ttl <= 0:
                raise ValueError(f"ttl must be > 0 seconds, got {self.ttl!r}")
            object.__setattr__(self, "ttl", float(self.ttl))
        if self.wait_timeout is not None:
            object.__setattr__(self, "wait_timeout", check_wait_timeout(self.wait_timeout))
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise TypeError(f"name must be a non-empty str or None, got {self.name!r}")
        for option in ("public", "per_user", "query"):
            if not isinstance(getattr(self, option), bool):
                raise TypeError(f"{option} must be True or False, got {getattr(self, option)!r}")
        vary = tuple(n.lower() for n in _names(self.vary, "vary", _FIELD_NAME))
        cookies = _names(self.cookies, "cookies", _COOKIE_NAME)
        if self.public and self.per_user:
            raise ValueError("a route cannot be both public and per_user")
        if self.per_user and cookies:
            raise ValueError("per_user already keys on every cookie: drop cookies=")
        object.__setattr__(self, "vary", vary)
        object.__setattr__(self, "cookies", cookies)
        keyed = set(vary) | {COOKIE_PREFIX + c for c in cookies}
        if self.per_user:
            keyed.update(CREDENTIAL_FIELDS)
        object.__setattr__(self, "keyed_on", tuple(sorted(keyed)))


#: The route of a cache with no per-route declarations.
DEFAULT_ROUTE = Route()


#: The route of a cache with no per-route declarations.
DEFAULT_ROUTE = Route()
