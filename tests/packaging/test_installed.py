"""What ``make test`` runs against the installed wheel is that wheel: chorde comes from
site-packages, compiled, and importing it is silent.

These checks run when ``CHORDE_EXPECT_INSTALLED=1`` (make test sets it for the pass over the
wheel installed in its own venv); in a checkout they are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import chorde

pytestmark = pytest.mark.skipif(
    os.environ.get("CHORDE_EXPECT_INSTALLED") != "1", reason="not the installed-wheel pass"
)

SITE = Path(sysconfig.get_paths()["purelib"]).resolve()
PACKAGES = ("chorde", "chorde_django", "chorde_flask", "chorde_tornado", "chorde_starlette")


def test_this_session_imports_the_installed_copy():
    for name in PACKAGES:
        module = __import__(name)
        assert Path(module.__file__).resolve().is_relative_to(SITE), module.__file__


def test_installed_copy_is_compiled():
    from chorde.clients import inproc

    assert chorde.speedups_enabled(), chorde._speedups.status()
    assert inproc.__file__.endswith(".so")
    assert Path(inproc.__file__).resolve().is_relative_to(SITE)


def test_import_prints_and_warns_nothing():
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            "import chorde, chorde.clients.inproc, chorde.decorators",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(sys.executable),  # nowhere near a checkout
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHORDE_PURE_PYTHON")},
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_wheel_ships_what_the_compiled_build_needs():
    root = Path(chorde.__file__).parent
    assert (root / "clients" / "inproc.pxd").is_file()  # part of the build's digest
    assert (root / "py.typed").is_file()
    assert not list(root.rglob("*.c"))
