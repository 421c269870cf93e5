"""Stand-ins for the Cython declarations chorde's compiled modules use, for pure-Python
installs without Cython (where the declarations change nothing)."""

from __future__ import annotations

from typing import Any

__all__ = ["compiled", "declare", "double"]

compiled = False
double = float


def declare(kind: Any, value: Any) -> Any:
    """``cython.declare(type, value)``: the value itself."""
    return value
