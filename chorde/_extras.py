"""Optional dependencies imported so that a missing one names the extra that installs it.

Adapters and optional modules import their framework or client library inside
``with requires_extra("flask"):``; a ``ModuleNotFoundError`` raised there becomes a
:class:`~chorde.errors.MissingDependencyError` (an ``ImportError``) saying
``pip install 'chorde[flask]'``. An import statement inside a ``with`` block keeps the
import visible to linters and type checkers, which a function call taking a module name
would hide.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from chorde.errors import MissingDependencyError

__all__ = ["requires_extra"]


@contextlib.contextmanager
def requires_extra(extra: str) -> Iterator[None]:
    """Turn a missing module imported in the block into an error naming ``extra``."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"{exc.name or 'a module'} is needed for this feature: pip install 'chorde[{extra}]'"
        ) from exc
