"""Builds chorde's optional compiled speedups; the package metadata is in pyproject.toml.

Each module of ``chorde._speedups.MODULES`` is compiled with Cython from its own ``.py``
(pure-Python mode; a ``.pxd`` beside it adds C types) and stored under ``chorde/_speedups/``
with the digest of its source in the file name, where ``import chorde`` finds it. Building is
best effort: without Cython or a C compiler, or when one module fails to compile, the build
warns and chorde runs that module as pure Python.

``python setup.py build_ext --inplace`` (re)builds them in a checkout, which ``make
build-ext`` does.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_ROOT = os.path.dirname(os.path.abspath(__file__))


def _load_speedups() -> Any:
    # The naming rules live in chorde/_speedups; load that file alone, not the chorde package.
    path = os.path.join(_ROOT, "chorde", "_speedups", "__init__.py")
    spec = importlib.util.spec_from_file_location("_chorde_speedups_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_speedups = _load_speedups()

_DIRECTIVES = {
    "language_level": 3,
    # Annotations stay documentation: a compiled `x: float` would otherwise coerce or reject
    # arguments the pure module accepts. Types the compiled build relies on are in .pxd files.
    "annotation_typing": False,
    "binding": True,
    "embedsignature": True,
}


def _build_name(module: str) -> str:
    """Where setuptools puts the extension: ``chorde.keys`` -> ``chorde._speedups.keys``."""
    return "chorde._speedups." + module.split(".", 1)[1]


def _module_name(build_name: str) -> str:
    return "chorde." + build_name.removeprefix("chorde._speedups.")


def _warn(msg: str) -> None:
    print(f"WARNING: chorde speedups: {msg}", file=sys.stderr)


class BuildSpeedups(build_ext):
    """``build_ext`` that cythonizes first and never fails the install."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    # distutils asks for the file name with the last name component only, setuptools (when
    # copying in place) with the full name: both get the source digest inserted.
    def get_ext_filename(self, fullname: str) -> str:
        return self._with_digest(fullname, super().get_ext_filename(fullname))

    def get_ext_fullpath(self, ext_name: str) -> str:
        return self._with_digest(ext_name, super().get_ext_fullpath(ext_name))

    @staticmethod
    def _with_digest(fullname: str, path: str) -> str:
        if not fullname.startswith("chorde._speedups."):
            return path
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        digest = _speedups.source_digest(_speedups.source_path(_module_name(fullname)))
        if path.endswith(f".{digest}{suffix}"):
            return path
        return f"{path.removesuffix(suffix)}.{digest}{suffix}"

    def run(self) -> None:
        try:
            from Cython.Build import cythonize  # noqa: F401
        except ImportError:
            _warn("Cython 3 is not installed; chorde will run as pure Python")
            self.extensions = []
            return
        self._failed: list[Any] = []
        super().run()

    def build_extensions(self) -> None:
        super().build_extensions()
        # Failed extensions leave no file behind: drop them before anything copies them.
        self.extensions = [e for e in self.extensions if e not in self._failed]

    def build_extension(self, ext: Extension) -> None:
        module = _module_name(ext.name)
        try:
            self._cythonize(ext, module)
            super().build_extension(ext)
        except Exception as exc:  # any failure: that module stays pure Python
            _warn(f"could not compile {module} ({type(exc).__name__}: {exc}); using pure Python")
            self._failed.append(ext)

    def _cythonize(self, ext: Extension, module: str) -> None:
        from Cython.Build import cythonize

        source = _speedups.source_path(module)
        # Cython must see the module's real name (classes' __module__, the init function).
        (compiled,) = cythonize(
            [Extension(module, [os.path.relpath(source, _ROOT)])],
            build_dir=os.path.join(self.build_temp, "cython"),
            compiler_directives=_DIRECTIVES,
            quiet=True,
        )
        ext.sources = list(compiled.sources)

    def _forget_old_builds(self, module: str) -> None:
        current = _speedups.compiled_path(
            module, _speedups.source_digest(_speedups.source_path(module))
        )
        for path in _speedups._builds(module):
            if os.path.abspath(path) != os.path.abspath(current):
                os.remove(path)

    def copy_extensions_to_source(self) -> None:
        for ext in self.extensions:  # chorde/_speedups/clients/ is not in the checkout
            module = _module_name(ext.name)
            os.makedirs(os.path.dirname(_speedups.compiled_path(module, "x")), exist_ok=True)
        super().copy_extensions_to_source()
        for ext in self.extensions:
            self._forget_old_builds(_module_name(ext.name))


def _extensions() -> list[Extension]:
    # Sources are the .py files; build_extension swaps in the generated C.
    return [
        Extension(_build_name(m), [os.path.relpath(_speedups.source_path(m), _ROOT)])
        for m in _speedups.MODULES
    ]


if __name__ == "__main__":
    setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildSpeedups})
