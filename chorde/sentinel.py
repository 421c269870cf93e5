"""The ``NONE`` sentinel: "no value", distinct from ``None`` so ``None`` can be cached."""

from __future__ import annotations

from typing import Final

__all__ = ["NONE", "NoneType_"]


class NoneType_:
    """Type of the :data:`NONE` sentinel; falsy, a singleton, survives pickling."""

    __slots__ = ()
    _instance: NoneType_ | None = None

    def __new__(cls) -> NoneType_:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NONE"

    def __reduce__(self) -> str:
        return "NONE"


NONE: Final = NoneType_()
