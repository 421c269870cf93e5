"""The compatibility matrix: CPython 3.11-3.14 x Django 5.2 / 6.0 (``make test`` covers the
machine's own Python; this covers the rest where the interpreters exist).

    nox                      # every session whose interpreter is on PATH; the others skip
    nox -s "tests(python='3.12', django='6.0')"

Each session installs chorde from the checkout as users do (a non-editable build, compiled),
with the test extra and the Django series, then runs the contract suite, the Django
adapter's tests (Django's own cache-backend suite included) and the packaging and speedups
tests against that installed copy, from a copy of the tests outside the checkout (so
``import chorde`` cannot pick up the checkout). Django 6 needs Python 3.12 or newer, so
3.11 runs 5.2 only.

With pyenv, make its interpreters visible first, e.g.
``PYENV_VERSION=3.11.7:3.12.1:3.13.0 nox``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.error_on_missing_interpreters = False  # an absent Python skips its sessions
nox.options.reuse_venv = "yes"

ROOT = Path(__file__).parent
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
DJANGO = {"5.2": "Django>=5.2,<5.3", "6.0": "Django>=6.0,<6.1"}
MATRIX = [
    (python, django)
    for python in PYTHONS
    for django in DJANGO
    if not (django == "6.0" and python == "3.11")
]
TESTS = (
    "tests/contract",
    "tests/django",
    "tests/packaging",
    "tests/test_speedups.py",
    "tests/test_speedups_api.py",
)


@nox.session
@nox.parametrize(("python", "django"), MATRIX)
def tests(session: nox.Session, django: str) -> None:
    """One Python x Django series, against chorde installed from the checkout."""
    session.install(".[test]", DJANGO[django], env={"CHORDE_REQUIRE_SPEEDUPS": "1"})
    run = Path(session.create_tmp()) / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    for name in ("tests", "example_projects", "benchmarks"):
        shutil.copytree(ROOT / name, run / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", run / "pyproject.toml")
    session.chdir(run)
    session.run("python", "-m", "chorde._speedups")  # exits 1 unless compiled
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-o",
        f"cache_dir={ROOT / '.pytest_cache'}",
        *TESTS,
        *session.posargs,
        env={"CHORDE_EXPECT_INSTALLED": "1"},
    )
