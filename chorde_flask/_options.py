"""The per-call options of Flask views and memoized functions that Flask-Caching users know:
``unless`` and ``forced_update`` predicates, ``source_check``."""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable
from typing import Any

__all__: list[str] = []  # internal module


@functools.cache
def _wants_args(predicate: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(predicate).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters
    )


def check_predicate(value: Any, option: str) -> Callable[..., Any] | None:
    """``value`` if it is None or callable, else a TypeError naming ``option``."""
    if value is None:
        return None
    if not callable(value):
        raise TypeError(f"{option} must be a callable returning True or False, got {value!r}")
    predicate: Callable[..., Any] = value
    return predicate


def holds(
    predicate: Callable[..., Any] | None,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> bool:
    """Whether ``predicate`` is true for this call: called as ``predicate(fn, *args,
    **kwargs)`` when it takes arguments, else as ``predicate()`` (Flask-Caching's rule)."""
    if predicate is None:
        return False
    if _wants_args(predicate):
        return bool(predicate(fn, *args, **kwargs))
    return bool(predicate())


def source_digest(fn: Callable[..., Any]) -> str:
    """A short digest of ``fn``'s source code (``source_check``: results computed by an
    older version of the code are not reused); a TypeError when it has none."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError) as exc:
        raise TypeError(f"source_check: cannot read the source of {fn!r}: {exc}") from None
    return hashlib.sha256(source.encode()).hexdigest()[:16]
