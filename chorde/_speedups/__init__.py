"""Optional compiled builds of chorde's hot modules, and the import hook that picks them.

``setup.py build_ext`` compiles each module of :data:`MODULES` with Cython, from the very
same ``.py`` file (Cython's pure-Python mode, with an optional ``.pxd`` beside it for C
types), and stores the extension here as ``<name>.<source digest><EXT_SUFFIX>``, away from
the normal import path. :func:`install` puts a finder on ``sys.meta_path`` that imports the
extension under the module's own name (``chorde.clients.inproc``), so classes, pickles and
logger names are the same in both builds.

The pure-Python module is used instead when ``CHORDE_PURE_PYTHON`` is set (to anything but
``""`` or ``"0"``), when no extension was built, or when the extension was built from another
version of the source (a stale build is never run; a warning says to rebuild).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

__all__ = [
    "BUILD_RECIPE",
    "ENV_VAR",
    "MODULES",
    "compiled_path",
    "enabled",
    "forced_pure",
    "install",
    "load_pure",
    "source_digest",
    "source_path",
    "status",
]

#: Setting this environment variable (to anything but "" or "0") forces the pure modules.
ENV_VAR = "CHORDE_PURE_PYTHON"
#: The modules with a compiled build, in build order.
MODULES: tuple[str, ...] = (
    "chorde.clients.inproc",
    "chorde.keys",
    "chorde.serialization",
    "chorde.decorators",
)
#: How setup.py compiles (its directives and fixes to the generated C): part of every
#: build's digest, so a change to the recipe makes older builds stale, like a source edit.
BUILD_RECIPE = 2
_DIGEST_CHARS = 16
_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGE_ROOT = os.path.dirname(_HERE)  # the directory holding chorde/'s modules


def forced_pure() -> bool:
    """True when the environment asks for the pure-Python modules."""
    return os.environ.get(ENV_VAR, "") not in ("", "0")


def source_path(name: str) -> str:
    """The ``.py`` file of a chorde module (``chorde.keys`` -> ``.../chorde/keys.py``)."""
    parts = name.split(".")
    if parts[0] != "chorde" or len(parts) < 2:
        raise ValueError(f"not a chorde submodule: {name!r}")
    return os.path.join(_PACKAGE_ROOT, *parts[1:]) + ".py"


def source_digest(path: str) -> str:
    """The digest naming the build of one source file and the ``.pxd`` beside it, if any
    (their content, not their dates, and :data:`BUILD_RECIPE`): editing either makes the
    build stale."""
    import hashlib  # here, not at `import chorde`: only importing a compiled module needs it

    digest = hashlib.sha256(b"chorde speedups recipe %d\0" % BUILD_RECIPE)
    with open(path, "rb") as f:
        digest.update(f.read())
    try:
        with open(os.path.splitext(path)[0] + ".pxd", "rb") as f:
            digest.update(b"\0pxd\0" + f.read())
    except FileNotFoundError:
        pass
    return digest.hexdigest()[:_DIGEST_CHARS]


def compiled_path(name: str, digest: str) -> str:
    """Where the extension built from the source with ``digest`` lives."""
    parts = name.split(".")[1:]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return os.path.join(_HERE, *parts[:-1], f"{parts[-1]}.{digest}{suffix}")


def _builds(name: str) -> list[str]:
    """Every extension built for ``name``, whatever the source version."""
    parts = name.split(".")[1:]
    folder = os.path.join(_HERE, *parts[:-1])
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    return [
        os.path.join(folder, e)
        for e in entries
        if e.startswith(parts[-1] + ".") and e.endswith(suffix)
    ]


def _resolve(name: str) -> tuple[str | None, str]:
    """``(extension path or None, why)`` for one module, without importing anything."""
    if forced_pure():
        return None, f"pure ({ENV_VAR} set)"
    try:
        wanted = compiled_path(name, source_digest(source_path(name)))
    except OSError:
        return None, "pure (no source to check the build against)"
    if os.path.exists(wanted):
        return wanted, "compiled"
    if _builds(name):
        return None, "pure (stale build: the source changed since it was compiled)"
    return None, "pure (not built)"


def status(modules: Sequence[str] = MODULES) -> dict[str, str]:
    """Which build each module runs: ``"compiled"``, or ``"pure (<why>)"``.

    For a module already imported this is the build it was imported from; otherwise the
    build an import would pick now.
    """
    out: dict[str, str] = {}
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for name in modules:
        module = sys.modules.get(name)
        if module is None:
            out[name] = _resolve(name)[1]
        elif (getattr(module, "__file__", None) or "").endswith(suffixes):
            out[name] = "compiled"
        else:
            why = _resolve(name)[1]
            out[name] = "pure (imported before it was built)" if why == "compiled" else why
    return out


def enabled() -> bool:
    """True when every module of :data:`MODULES` runs (or will run) its compiled build."""
    return all(v == "compiled" for v in status().values())


def _advice() -> str:
    """How to get a current build, for where this copy of chorde lives."""
    checkout = os.path.dirname(_PACKAGE_ROOT)
    if os.path.exists(os.path.join(checkout, "setup.py")):
        return (
            f"Rebuild it with `make build-ext` in {checkout} "
            "(or `python setup.py build_ext --inplace`)."
        )
    return (
        f"This installed copy ({_PACKAGE_ROOT}) was changed after it was built: reinstall "
        f"chorde (pip install --force-reinstall), or set {ENV_VAR}=1 to run it as it is."
    )


class _Finder:
    """Imports the current compiled build of a module of :data:`MODULES`, if there is one.

    A meta path finder by protocol (``find_spec``): deriving from ``importlib.abc``'s ABC
    would import ``importlib.resources`` and more, tens of milliseconds of ``import chorde``."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)
        self.warned: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        so, why = _resolve(fullname)
        if so is None:
            if why.startswith("pure (stale") and fullname not in self.warned:
                self.warned.add(fullname)
                warnings.warn(
                    f"chorde: the compiled {fullname} was built from another version of "
                    f"{source_path(fullname)}; using the pure-Python module. {_advice()}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return None  # the regular finders load the .py
        loader = importlib.machinery.ExtensionFileLoader(fullname, so)
        return importlib.util.spec_from_file_location(fullname, so, loader=loader)


_finder: _Finder | None = None


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once); called by ``import chorde``."""
    global _finder
    if _finder is None:
        _finder = _Finder(MODULES)
        sys.meta_path.insert(0, _finder)


def load_pure(name: str) -> ModuleType:
    """A fresh pure-Python copy of a chorde module, whatever build ``import`` gives.

    The copy is not registered in ``sys.modules``; its classes are distinct from the
    imported module's. Meant for benchmarks and tests comparing both builds.
    """
    path = source_path(name)
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
