"""System checks: a misconfigured ChordeCache fails ``manage.py check`` (and runserver)."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

__all__ = ["check_caches"]

_BACKEND = "chorde_django.ChordeCache"


def _is_chorde(backend: Any) -> bool:
    if backend in (_BACKEND, "chorde_django.backend.ChordeCache"):
        return True
    if not isinstance(backend, str) or not backend:
        return False
    from django.utils.module_loading import import_string

    from chorde_django.backend import ChordeCache

    try:
        cls = import_string(backend)
    except ImportError:
        return False  # Django's own checks and cache handler report that
    return isinstance(cls, type) and issubclass(cls, ChordeCache)


@checks.register(checks.Tags.caches)
def check_caches(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Parse every ChordeCache entry of ``CACHES``; an error names the option at fault."""
    from django.conf import settings

    from chorde_django._config import parse

    messages: list[checks.CheckMessage] = []
    stores: dict[str, tuple[str, int, str]] = {}
    for alias, params in settings.CACHES.items():
        if not isinstance(params, dict) or not _is_chorde(params.get("BACKEND")):
            continue
        try:
            stack = parse(params.get("LOCATION", ""), params, alias=alias)
        except ImproperlyConfigured as exc:
            messages.append(
                checks.Error(
                    str(exc),
                    hint="See the ChordeCache docstring for the OPTIONS each stack takes.",
                    obj=f"CACHES[{alias!r}]",
                    id="chorde_django.E001",
                )
            )
            continue
        if stack.kind != "inproc":
            continue
        first = stores.setdefault(stack.location, (alias, stack.size, stack.store))
        if (first[1], first[2]) != (stack.size, stack.store):
            messages.append(
                checks.Warning(
                    f"CACHES[{alias!r}] shares the in-process store LOCATION="
                    f"{stack.location!r} with CACHES[{first[0]!r}] but asks for SIZE="
                    f"{stack.size}, STORE={stack.store!r}; the store built first wins",
                    hint="Give the two aliases the same SIZE/STORE, or different LOCATIONs.",
                    obj=f"CACHES[{alias!r}]",
                    id="chorde_django.W001",
                )
            )
    return messages
