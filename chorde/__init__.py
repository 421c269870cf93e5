"""chorde: a clustered caching library.

Clients live in :mod:`chorde.clients`, the ``@cached`` decorator in
:mod:`chorde.decorators`.
"""

from __future__ import annotations

from chorde.errors import CacheMissError, ChordeError, ConfigurationError
from chorde.sentinel import NONE

__all__ = ["NONE", "CacheMissError", "ChordeError", "ConfigurationError", "__version__"]

__version__ = "0.3.0.dev0"
