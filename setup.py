"""Builds chorde's optional compiled speedups; the package metadata is in pyproject.toml.

Each module of ``chorde._speedups.MODULES`` is compiled with Cython from its own ``.py``
(pure-Python mode; a ``.pxd`` beside it adds C types) and stored under ``chorde/_speedups/``
with the digest of its source in the file name, where ``import chorde`` finds it.

Building is best effort: without Cython or a C compiler, or when one module fails to
compile, the build says so in a banner on stderr and chorde runs that module as pure
Python. ``CHORDE_REQUIRE_SPEEDUPS=1`` turns any such failure into a failed build (``make
test`` and the cibuildwheel configuration set it); ``CHORDE_PURE_PYTHON=1`` builds a pure
wheel without trying.

``python setup.py build_ext --inplace`` (re)builds them in a checkout, which ``make
build-ext`` does.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_ROOT = os.path.dirname(os.path.abspath(__file__))
#: Set (to anything but "" or "0") to make a module that does not compile fail the build.
REQUIRE_VAR = "CHORDE_REQUIRE_SPEEDUPS"


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
    # Functions and methods become Cython functions that inspect.signature() reads like
    # Python ones (parameters, defaults, annotations); docstrings stay as written (no
    # embedsignature: it prefixed each one with a C-style signature line).
    "binding": True,
}


def _required() -> bool:
    return os.environ.get(REQUIRE_VAR, "") not in ("", "0")


def _build_name(module: str) -> str:
    """Where setuptools puts the extension: ``chorde.keys`` -> ``chorde._speedups.keys``."""
    return "chorde._speedups." + module.split(".", 1)[1]


def _module_name(build_name: str) -> str:
    return "chorde." + build_name.removeprefix("chorde._speedups.")


def _warn(msg: str) -> None:
    bar = "=" * 78
    print(f"\n{bar}\nWARNING: chorde speedups: {msg}\n{bar}\n", file=sys.stderr)


# -- argument errors that name the parameter ---------------------------------------------
#
# Cython reports a missing argument as "f() takes at least 1 positional argument (0 given)"
# (cython/cython#1281); Python names it: "f() missing 1 required positional argument:
# 'size'". The generated C has the parameter names at hand (the ``__pyx_pyargnames`` array
# of each wrapper), so each report of too few arguments is pointed at a helper that names
# them. Only the error path changes; a Cython whose output no longer matches these patterns
# leaves Cython's wording (and tests/test_speedups_api.py fails).

_ARGS_HELPER = r"""
/* chorde (setup.py): name the missing parameters, as Python does. */
static void __pyx_chorde_args_error(const char *func_name, PyObject **const *names,
                                    PyObject *const *values, int exact, Py_ssize_t num_min,
                                    Py_ssize_t num_max, Py_ssize_t num_found) {
    PyObject *missing, *text = NULL;
    Py_ssize_t i, n;
    if (num_found >= num_min) {
        __Pyx_RaiseArgtupleInvalid(func_name, exact, num_min, num_max, num_found);
        return;
    }
    missing = PyList_New(0);
    if (!missing) return;
    for (i = num_found; i < num_min; i++) {
        PyObject *r;
        if (values && values[i]) continue;
        r = PyObject_Repr(*names[i]);
        if (!r || PyList_Append(missing, r) < 0) { Py_XDECREF(r); Py_DECREF(missing); return; }
        Py_DECREF(r);
    }
    n = PyList_Size(missing);
    if (n == 0) {
        __Pyx_RaiseArgtupleInvalid(func_name, exact, num_min, num_max, num_found);
    } else if (n == 1) {
        PyErr_Format(PyExc_TypeError, "%s() missing 1 required positional argument: %U",
                     func_name, PyList_GetItem(missing, 0));
    } else {
        PyObject *last = PyList_GetItem(missing, n - 1), *sep = NULL, *head = NULL;
        Py_INCREF(last);
        if (PyList_SetSlice(missing, n - 1, n, NULL) == 0 && (sep = PyUnicode_FromString(", ")))
            head = PyUnicode_Join(sep, missing);
        if (head)
            text = PyUnicode_FromFormat(n == 2 ? "%U and %U" : "%U, and %U", head, last);
        if (text)
            PyErr_Format(PyExc_TypeError, "%s() missing %zd required positional arguments: %U",
                         func_name, n, text);
        Py_XDECREF(sep); Py_XDECREF(head); Py_XDECREF(text); Py_DECREF(last);
    }
    Py_DECREF(missing);
}
"""
_PROTO = re.compile(r"static void __Pyx_RaiseArgtupleInvalid\([^;]*\);")
_NAMES = re.compile(r"PyObject \*\*\s*(?:const\s*)?__pyx_pyargnames\[\]\s*=\s*(\{[^;]*\});")
_RAISE = re.compile(r'__Pyx_RaiseArgtupleInvalid\(("[^"]*"), (\d+), (\d+), (\d+), (\w+)\);')


def name_missing_arguments(c_source: str) -> tuple[str, int]:
    """``c_source`` with its too-few-arguments errors naming the parameters, and how many
    sites were changed. Idempotent."""
    proto = _PROTO.search(c_source)
    if proto is None or "__pyx_chorde_args_error" in c_source:
        return c_source, 0
    out: list[str] = []
    names = None  # the initializer of the current wrapper's parameter-name array
    changed = 0
    for line in c_source.splitlines(keepends=True):
        if line[:1] not in ("", " ", "\t", "#", "\n") and "(" in line:  # a top-level definition
            names = None
        found = _NAMES.search(line)
        if found:
            names = found.group(1)
        site = _RAISE.search(line)
        if site and int(site.group(3)) > 0:
            func, exact, low, high, given = site.groups()
            args = f"{func}, {{names}}, {{values}}, {exact}, {low}, {high}, {given}"
            if given != "__pyx_nargs":  # inside the keyword branch: both arrays in scope
                call = "__pyx_chorde_args_error(" + args.format(
                    names="__pyx_pyargnames", values="values"
                )
                line = line.replace(site.group(0), call + ");")
                changed += 1
            elif names is not None:  # after the block: a copy of the names
                call = "__pyx_chorde_args_error(" + args.format(names="__n", values="NULL")
                line = line.replace(
                    site.group(0), f"{{ PyObject ** const __n[] = {names}; {call}); }}"
                )
                changed += 1
        out.append(line)
    text = "".join(out)
    end = text.index(";", text.index("static void __Pyx_RaiseArgtupleInvalid(")) + 1
    return text[:end] + "\n" + _ARGS_HELPER + text[end:], changed


class BuildSpeedups(build_ext):
    """``build_ext`` that cythonizes first and, unless told otherwise, never fails."""

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
        if _speedups.forced_pure():
            self.extensions = []
            return
        try:
            from Cython.Build import cythonize  # noqa: F401
        except ImportError:
            self._give_up("Cython 3 is not installed; chorde will run as pure Python")
            self.extensions = []
            return
        self._failed: list[Any] = []
        super().run()
        if not self.inplace:  # a wheel gets only the current build of each module
            for ext in self.extensions:
                self._forget_old_builds(ext, self.get_ext_fullpath(ext.name))

    def build_extensions(self) -> None:
        super().build_extensions()
        # Failed extensions leave no file behind: drop them before anything copies them.
        self.extensions = [e for e in self.extensions if e not in self._failed]
        if self._failed:
            names = ", ".join(_module_name(e.name) for e in self._failed)
            self._give_up(f"{names} did not compile (see above); they will run as pure Python")

    def build_extension(self, ext: Extension) -> None:
        module = _module_name(ext.name)
        if self.compiler.compiler_type == "unix" and "-g0" not in ext.extra_compile_args:
            ext.extra_compile_args.append("-g0")  # no debug info: a third of the wheel's size
        try:
            self._cythonize(ext, module)
            super().build_extension(ext)
        except Exception as exc:  # any failure: that module stays pure Python
            if _required():
                raise
            print(f"chorde speedups: {module}: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._failed.append(ext)

    @staticmethod
    def _give_up(msg: str) -> None:
        if _required():
            raise SystemExit(f"chorde speedups: {msg} ({REQUIRE_VAR} is set)")
        _warn(msg)

    def _cythonize(self, ext: Extension, module: str) -> None:
        from Cython.Build import cythonize

        source = _speedups.source_path(module)
        # Cython must see the module's real name (classes' __module__, the init function).
        (compiled,) = cythonize(
            [Extension(module, [os.path.relpath(source, _ROOT)])],
            build_dir=os.path.join(self.build_temp, f"cython-{_speedups.BUILD_RECIPE}"),
            compiler_directives=_DIRECTIVES,
            quiet=True,
        )
        ext.sources = list(compiled.sources)
        for path in ext.sources:
            if path.endswith(".c"):
                with open(path, encoding="utf-8") as f:
                    text, changed = name_missing_arguments(f.read())
                if changed:  # rewritten once: an untouched file keeps the build up to date
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(text)

    @staticmethod
    def _forget_old_builds(ext: Extension, current: str) -> None:
        """Remove the builds of ``ext`` from other versions of its source beside ``current``."""
        folder, name = os.path.split(current)
        stem = name.split(".", 1)[0] + "."
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        for entry in os.listdir(folder):
            if entry.startswith(stem) and entry.endswith(suffix) and entry != name:
                os.remove(os.path.join(folder, entry))

    def copy_extensions_to_source(self) -> None:
        # Replaced, not rewritten: a running process may have the previous file mapped.
        for ext in self.extensions:
            built = os.path.join(self.build_lib, self.get_ext_filename(ext.name))
            target = _speedups.compiled_path(
                _module_name(ext.name),
                _speedups.source_digest(_speedups.source_path(_module_name(ext.name))),
            )
            os.makedirs(os.path.dirname(target), exist_ok=True)
            partial = f"{target}.{os.getpid()}.tmp"
            shutil.copyfile(built, partial)
            shutil.copymode(built, partial)
            os.replace(partial, target)
            self._forget_old_builds(ext, target)


def _extensions() -> list[Extension]:
    if _speedups.forced_pure():
        return []  # a pure wheel (py3-none-any)
    # Sources are the .py files; build_extension swaps in the generated C.
    return [
        Extension(_build_name(m), [os.path.relpath(_speedups.source_path(m), _ROOT)])
        for m in _speedups.MODULES
    ]


if __name__ == "__main__":
    setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildSpeedups})
