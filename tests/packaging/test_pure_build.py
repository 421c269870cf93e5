"""Builds that cannot or may not compile still install and work, as pure Python: without a C
compiler (the build warns and goes on, unless CHORDE_REQUIRE_SPEEDUPS=1 makes that fatal),
and with CHORDE_PURE_PYTHON=1 (a pure wheel, no compile attempted).

Each build runs on a copy of the sources (so the checkout's build/ and in-place extensions
play no part) and its wheel is installed, not editable, into a directory of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("setup.py", "pyproject.toml", "README.md", "LICENSE")
PACKAGES = ("chorde", "chorde_django", "chorde_flask", "chorde_tornado", "chorde_starlette")

pytestmark = pytest.mark.skipif(
    not (REPO / "setup.py").exists(), reason="no checkout here (installed-copy run)"
)

_CHECK = """
import chorde, chorde.clients.inproc as m
from chorde.decorators import cached
assert not chorde.speedups_enabled()
assert m.__file__.endswith("inproc.py"), m.__file__
c = m.InprocCacheClient(10)
f = cached(c, ttl=60)(lambda x: x * 2)
assert (f(21), f(21), c.stats.hits) == (42, 42, 1)
print(chorde._speedups.status()["chorde.clients.inproc"])
"""


def _copy_sources(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.c")
    dest.mkdir()
    for name in SOURCES:
        shutil.copy2(REPO / name, dest / name)
    for name in PACKAGES:
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


def _build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    src = _copy_sources(tmp_path / "src")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHORDE_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", "dist", "."],
        cwd=src,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _install_and_check(tmp_path: Path) -> str:
    (wheel,) = (tmp_path / "src" / "dist").glob("*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHORDE_")}
    environ["PYTHONPATH"] = str(target)
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _CHECK],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout.strip()


@pytest.fixture
def no_compiler(tmp_path: Path) -> dict[str, str]:
    """An environment whose C compiler always fails."""
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho 'no C compiler here' >&2\nexit 1\n")
    cc.chmod(0o755)
    return {"CC": str(cc), "LDSHARED": f"{cc} -shared"}


def test_pure_python_wheel_on_request(tmp_path: Path) -> None:
    built = _build(tmp_path, CHORDE_PURE_PYTHON="1")
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "src" / "dist").glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")  # nothing compiled, any platform
    assert _install_and_check(tmp_path) == "pure (not built)"


def test_without_a_compiler_the_build_warns_and_installs_pure(
    tmp_path: Path, no_compiler: dict[str, str]
) -> None:
    built = _build(tmp_path, **no_compiler)
    assert built.returncode == 0, built.stderr
    assert "did not compile" in built.stderr and "pure Python" in built.stderr
    assert _install_and_check(tmp_path) == "pure (not built)"


def test_without_a_compiler_a_required_build_fails(
    tmp_path: Path, no_compiler: dict[str, str]
) -> None:
    built = _build(tmp_path, CHORDE_REQUIRE_SPEEDUPS="1", **no_compiler)
    assert built.returncode != 0
    assert "no C compiler here" in built.stderr + built.stdout
    assert not list((tmp_path / "src" / "dist").glob("*.whl"))
