"""Exceptions raised by chorde."""

from __future__ import annotations

__all__ = ["CacheMissError", "ChordeError", "ConfigurationError", "MissingDependencyError"]


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


def require(module: str, extra: str):
    """Import an optional dependency or raise an error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is needed for this feature: pip install 'chorde[{extra}]'"
        ) from exc
