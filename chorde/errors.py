"""Exceptions raised by chorde."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

__all__ = [
    "CacheMissError",
    "ChordeError",
    "ConfigurationError",
    "MissingDependencyError",
    "RemovedNameError",
    "require",
    "requires_extra",
]


class ChordeError(Exception):
    """Base class of chorde's own errors."""


class CacheMissError(KeyError):
    """The key is not in the cache (or its entry is expired).

    A ``KeyError`` subclass, so ``except KeyError`` catches it too.
    """


class ConfigurationError(ChordeError, ValueError):
    """A client or adapter was configured with an invalid option."""


class MissingDependencyError(ChordeError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class RemovedNameError(ChordeError, ImportError):
    """A chorde 1.x module or name that is gone; the message names what replaced it."""


@contextlib.contextmanager
def requires_extra(extra: str) -> Iterator[None]:
    """Turn a missing module imported in the block into an error naming ``extra``.

    Adapters and optional modules import their framework or client library inside
    ``with requires_extra("flask"):``; a ``ModuleNotFoundError`` raised there becomes a
    :class:`MissingDependencyError` saying ``pip install 'chorde[flask]'``. An import
    statement inside the block stays visible to linters and type checkers.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"{exc.name or 'a module'} is needed for this feature: pip install 'chorde[{extra}]'"
        ) from exc


def require(module: str, extra: str) -> Any:
    """Import the optional dependency ``module``, or raise an error naming ``extra``."""
    with requires_extra(extra):
        return importlib.import_module(module)
