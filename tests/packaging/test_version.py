"""One version, in chorde/__init__.py, that sorts above chorde 1.x on PyPI."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

import chorde

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_version_is_the_2_0_line_above_chorde_1x():
    version = Version(chorde.__version__)
    assert version > Version("1.0.11")  # the last chorde 1.x on PyPI
    assert version.release[:1] == (2,)
    assert str(version) == chorde.__version__  # already in normalized form


@pytest.mark.skipif(not PYPROJECT.exists(), reason="no checkout here (installed-copy run)")
def test_pyproject_reads_the_version_from_the_package():
    project = tomllib.loads(PYPROJECT.read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "chorde.__version__"


def test_installed_metadata_agrees():
    assert importlib.metadata.version("chorde") == chorde.__version__
