"""chorde: a clustered caching library.

Clients live in :mod:`chorde.clients`, the ``@cached`` decorator in
:mod:`chorde.decorators`.
"""

from __future__ import annotations

from chorde import _speedups

# Before any other chorde module is imported: the hot modules then come from their compiled
# builds when those exist and are current (see chorde._speedups).
_speedups.install()

from chorde.errors import CacheMissError, ChordeError, ConfigurationError  # noqa: E402
from chorde.sentinel import NONE  # noqa: E402

__all__ = [
    "NONE",
    "CacheMissError",
    "ChordeError",
    "ConfigurationError",
    "__version__",
    "speedups_enabled",
]

__version__ = "2.0.0.dev0"


def speedups_enabled() -> bool:
    """True when chorde's compiled speedups are active (set ``CHORDE_PURE_PYTHON=1`` to
    force the pure-Python modules); ``chorde._speedups.status()`` details each module."""
    return _speedups.enabled()
