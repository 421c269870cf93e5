"""Django app config: add ``"chorde_django"`` to INSTALLED_APPS to check CACHES at startup."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["ChordeDjangoConfig"]


class ChordeDjangoConfig(AppConfig):
    """Registers the ChordeCache system checks."""

    name = "chorde_django"
    verbose_name = "chorde cache"

    def ready(self) -> None:
        """Register the checks (importing the module registers them)."""
        from chorde_django import checks  # noqa: F401
