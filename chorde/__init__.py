"""chorde: a clustered caching library.

Clients live in :mod:`chorde.clients`, the ``@cached`` decorator in
:mod:`chorde.decorators`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chorde import _speedups

# Before any other chorde module is imported: the hot modules then come from their compiled
# builds when those exist and are current (see chorde._speedups).
_speedups.install()

from chorde import _legacy  # noqa: E402
from chorde.errors import CacheMissError, ChordeError, ConfigurationError  # noqa: E402
from chorde.sentinel import NONE  # noqa: E402

# A chorde 1.x module that is gone raises on import, naming what replaced it.
_legacy.install()

__all__ = [
    "NONE",
    "CacheMissError",
    "CancelledError",
    "ChordeError",
    "ConfigurationError",
    "TimeoutError",
    "__version__",
    "speedups_enabled",
]

__version__ = "2.0.0.dev0"


if TYPE_CHECKING:
    # 1.x's names for what a chorde Future raises (resolved on first use, see below).
    from concurrent.futures import CancelledError as CancelledError
    from concurrent.futures import TimeoutError as TimeoutError
else:  # (type checkers keep flagging unknown names)

    def __getattr__(name: str) -> Any:
        # chorde 1.x's names here: what replaced them (see chorde._legacy).
        return _legacy.attribute(__name__, name)


def speedups_enabled() -> bool:
    """True when chorde's compiled speedups are active (set ``CHORDE_PURE_PYTHON=1`` to
    force the pure-Python modules); ``chorde._speedups.status()`` details each module."""
    return _speedups.enabled()
