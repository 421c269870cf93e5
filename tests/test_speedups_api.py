"""The compiled and the pure build show users one API: every public callable of the compiled
modules has the same ``inspect.signature`` and docstring in both, and a call missing an
argument names it in both (Cython alone would say "takes at least 1 positional argument").
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import chorde  # noqa: F401 (installs the finder that picks the compiled builds)
from chorde import _speedups

COMPILED = all(v == "compiled" for v in _speedups.status().values())
if not COMPILED and os.environ.get("CI") and not _speedups.forced_pure():
    raise RuntimeError(f"CI=true but the speedups are not all compiled: {_speedups.status()}")
pytestmark = pytest.mark.skipif(not COMPILED, reason="speedups not built (make build-ext) or off")

# Methods compared besides the public names.
_DUNDERS = ("__init__", "__call__")


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError) as exc:
        return f"<no signature: {exc}>"


def _doc(obj: Any) -> str | None:
    # cleandoc: Python 3.13 strips docstring indentation at compile time, Cython does not.
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else doc


def public_api(module: ModuleType) -> dict[str, tuple[str, Any]]:
    """``{dotted name: (kind or signature, docstring or value)}`` for ``module.__all__``.

    Classes are listed under their own name (an alias such as ``Cache`` names whichever
    class the build picked), with their public methods, ``__init__``/``__call__`` and
    properties (a compiled class's are getset descriptors, which compare by docstring).
    """
    api: dict[str, tuple[str, Any]] = {}
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj):
            cls_name = obj.__qualname__
            api[cls_name] = (_signature(obj), _doc(obj))
            for attr in dir(obj):
                if attr.startswith("_") and attr not in _DUNDERS:
                    continue
                static = inspect.getattr_static(obj, attr)
                if inspect.isdatadescriptor(static):
                    if static.__doc__ is None:  # a compiled class's C field: an attribute
                        continue
                    api[f"{cls_name}.{attr}"] = ("<data descriptor>", _doc(static))
                elif callable(value := getattr(obj, attr)):
                    api[f"{cls_name}.{attr}"] = (_signature(value), _doc(value))
                else:
                    api[f"{cls_name}.{attr}"] = ("<value>", type(value).__name__)
        elif callable(obj):
            api[name] = (_signature(obj), _doc(obj))
        else:  # data may differ per build (STORES names each build's store classes)
            api[name] = ("<value>", type(obj).__name__)
    return api


@pytest.fixture(scope="module", params=_speedups.MODULES)
def builds(request: pytest.FixtureRequest) -> tuple[ModuleType, ModuleType]:
    """``(compiled module, pure copy)`` of one module of MODULES."""
    compiled = importlib.import_module(request.param)
    assert compiled.__file__ and compiled.__file__.endswith(".so"), compiled.__file__
    return compiled, _speedups.load_pure(request.param)


def test_same_signatures_and_docstrings(builds: tuple[ModuleType, ModuleType]) -> None:
    compiled, pure = builds
    api_c, api_p = public_api(compiled), public_api(pure)
    if compiled.__name__ == "chorde.decorators":
        api_c.update(_decorated_api(compiled))
        api_p.update(_decorated_api(pure))
    assert len(api_p) >= 5
    # A pure function always has a signature: a compiled one without it differs here.
    _assert_same(api_c, api_p)


def _assert_same(api_c: dict[str, Any], api_p: dict[str, Any]) -> None:
    assert set(api_c) == set(api_p)
    differ = {k: (api_c[k], api_p[k]) for k in api_p if api_c[k] != api_p[k]}
    lines = [f"{k}:\n  compiled {c}\n  pure     {p}" for k, (c, p) in differ.items()]
    assert not differ, "\n".join(lines)


def _decorated_api(decorators: ModuleType) -> dict[str, tuple[str, Any]]:
    """What a user of ``@cached`` sees: the wrapped function, its variants (``bg()``,
    ``future()``) and their methods, for a plain and a coroutine function."""
    from chorde.clients.inproc import InprocCacheClient

    def area(width: int, height: int = 1) -> int:
        """Width times height."""
        return width * height

    async def aarea(width: int, height: int = 1) -> int:
        """Width times height, awaited."""
        return width * height

    api: dict[str, tuple[str, Any]] = {}
    for fn in (area, aarea):
        wrapper = decorators.cached(InprocCacheClient(10), ttl=60)(fn)
        for label, obj in (("", wrapper), (".bg()", wrapper.bg()), (".future()", wrapper.future())):
            name = f"@cached {fn.__name__}{label}"
            api[name] = (_signature(obj), _doc(obj))
            for attr in dir(obj):
                value = getattr(obj, attr)
                if not attr.startswith("_") and callable(value) and attr != "client":
                    api[f"{name}.{attr}"] = (_signature(value), _doc(value))
    return api


def test_aliases_keep_the_signature():
    compiled = importlib.import_module("chorde.clients.inproc")
    pure = _speedups.load_pure("chorde.clients.inproc")
    for alias in ("Cache", "LRUCache"):
        assert _signature(getattr(compiled, alias)) == _signature(getattr(pure, alias))


def test_inproc_client_signature_reads_like_python():
    from chorde.clients.inproc import InprocCacheClient

    sig = inspect.signature(InprocCacheClient)
    assert list(sig.parameters) == ["size", "store", "clock", "legacy"]  # legacy: 1.x names
    assert "Return the live value" in (InprocCacheClient.get.__doc__ or "")
    assert not (InprocCacheClient.get.__doc__ or "").startswith("_InprocClient")


def _first_required(fn: Callable[..., Any]) -> str | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    for p in params:
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            return p.name
    return None


def _callables(module: ModuleType) -> list[tuple[str, Callable[..., Any]]]:
    """Public functions and classes of ``module``, and the bound public methods of an
    in-process client (the one class whose instances need no setup)."""
    out = [(n, getattr(module, n)) for n in module.__all__ if callable(getattr(module, n))]
    if hasattr(module, "InprocCacheClient"):
        client = module.InprocCacheClient(4)
        out += [
            (f"InprocCacheClient().{a}", getattr(client, a))
            for a in dir(client)
            if not a.startswith("_") and inspect.ismethod(getattr(client, a))
        ]
    return out


def test_missing_arguments_are_named(builds: tuple[ModuleType, ModuleType]) -> None:
    checked = 0
    for module in builds:
        for name, fn in _callables(module):
            param = _first_required(fn)
            if param is None:
                continue
            with pytest.raises(TypeError) as err:
                fn()
            assert f"'{param}'" in str(err.value) or param in str(err.value), (name, err.value)
            checked += 1
    assert checked >= 4
