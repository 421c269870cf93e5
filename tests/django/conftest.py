"""Fixtures for the chorde_django tests: Django settings, the Django sdist's cache tests.

Django's settings are process-global: this configures them once (if nothing did before)
with a SECRET_KEY and ChordeCache as the default cache, so tests can build backends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django_helpers import suite_reports

#: Set to a Django sdist tarball (or an extracted ``tests`` dir) to run offline.
SDIST_ENV_VAR = "CHORDE_DJANGO_SDIST"


def _configure_django() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY="chorde-django-tests-" + "k" * 40,
            INSTALLED_APPS=["chorde_django"],
            CACHES={"default": {"BACKEND": "chorde_django.ChordeCache"}},
            USE_TZ=True,
        )
        import django

        django.setup()


_configure_django()


@pytest.fixture(autouse=True)
def _fresh_chorde_clients() -> Iterator[None]:
    """Forget the process-wide clients after each test: the next test's memcached may get
    a port a previous one used, and must not inherit a client that saw that one die."""
    yield
    from chorde_django import close_clients

    close_clients()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the pass/skip counts of Django's own cache tests against ChordeCache."""
    if not suite_reports:
        return
    terminalreporter.section("Django's own cache tests against ChordeCache")
    for r in suite_reports:
        parts = []
        for label, is_base in (("BaseCacheTests", True), ("middleware/utils tests", False)):
            counts: dict[str, int] = {}
            for name, outcome in r["outcomes"].items():
                if name.startswith("ChordeCache_") == is_base:
                    counts[outcome["outcome"]] = counts.get(outcome["outcome"], 0) + 1
            parts.append(f"{label}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
        terminalreporter.write_line(
            f"Django {r['django']}, {r['stack']} stack: " + "; ".join(parts)
        )


def _under_ci() -> bool:
    return os.environ.get("CI") == "true"


def _extract(tarball: Path, version: str, dest: Path) -> Path:
    """Extract ``tests/cache/`` of the sdist into ``dest/tests`` (atomically)."""
    tmp = Path(tempfile.mkdtemp(prefix="extract-", dir=dest.parent))
    with tarfile.open(tarball) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.name.split("/", 1)[-1].startswith("tests/cache/") and m.isfile()
        ]
        if not members:
            raise RuntimeError(f"{tarball} has no tests/cache/ (not a Django sdist?)")
        for m in members:
            m.name = m.name.split("/", 1)[1]
        tar.extractall(tmp, members=members, filter="data")
    try:
        tmp.rename(dest)
    except OSError:  # another session extracted it meanwhile
        if not (dest / "tests" / "cache" / "tests.py").exists():
            raise
    return dest / "tests"


def _obtain(version: str, cache_dir: Path) -> Path:
    dest = cache_dir / version
    if (dest / "tests" / "cache" / "tests.py").exists():
        return dest / "tests"
    given = os.environ.get(SDIST_ENV_VAR)
    if given:
        path = Path(given)
        if (path / "cache" / "tests.py").exists():
            return path
        return _extract(path, version, dest)
    download = cache_dir / "download"
    download.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--disable-pip-version-check", f"Django=={version}", "-d", str(download)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    tarballs = [
        p for p in download.glob("*.tar.gz") if p.name.lower() == f"django-{version}.tar.gz"
    ]
    if proc.returncode != 0 or not tarballs:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return _extract(tarballs[0], version, dest)


@pytest.fixture(scope="session")
def django_tests_dir(request: pytest.FixtureRequest) -> Path:
    """Django's test tree (``tests/cache/...``) from the sdist of the installed Django.

    Downloaded with pip once and kept in pytest's cache dir (``.pytest_cache``); set
    ``CHORDE_DJANGO_SDIST`` to a tarball to work offline. Without network the tests that
    need it skip, except under CI (``CI=true``), where that is a failure.
    """
    import django

    version = django.get_version()
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    if cache is not None:
        cache_dir = Path(cache.mkdir("django-sdist"))
    else:
        cache_dir = Path(tempfile.gettempdir()) / "chorde-django-sdist"
        cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _obtain(version, cache_dir)
    except Exception as exc:
        message = f"cannot obtain the Django {version} sdist for its cache tests: {exc}"
        if _under_ci():
            pytest.fail(message + " (CI=true: this is a failure)")
        pytest.skip(message)
