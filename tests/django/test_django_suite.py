"""Django's own cache tests against ChordeCache: ``BaseCacheTests`` and the middleware ones.

The test file comes from the sdist of the installed Django (see ``django_tests_dir``);
tests/django/django_suite_runner.py runs it in a subprocess under Django's test runner,
once per stack, and reports every test's outcome. Besides the backend mixin it runs
Django's backend-agnostic tests of the cache middleware, ``cache_page``, ``django.utils.cache``
and template responses (``MIDDLEWARE_CLASSES``) with their caches moved to ChordeCache. Every
test must pass except the few skipped there with their reason (``SKIPS``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django_helpers import record_suite_report, subprocess_env
from django_suite_runner import MIDDLEWARE_CLASSES, SKIPS

RUNNER = Path(__file__).with_name("django_suite_runner.py")


@pytest.mark.parametrize("stack", ["inproc", "memcached", "tiered"])
def test_django_base_cache_tests(
    stack: str, django_tests_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    args = [sys.executable, str(RUNNER), str(django_tests_dir), stack, str(tmp_path / "out.json")]
    if stack != "inproc":
        args.append(request.getfixturevalue("memcached").address)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert proc.returncode == 0, f"the suite runner crashed:\n{proc.stderr[-5000:]}"
    report = json.loads((tmp_path / "out.json").read_text())
    record_suite_report(report)
    outcomes = report["outcomes"]
    base = [n for n in outcomes if n.startswith("ChordeCache_")]
    assert len(base) >= 50, f"only {len(base)} BaseCacheTests ran: {sorted(base)}"
    for name in MIDDLEWARE_CLASSES:
        assert any(n.startswith(f"{name}_{stack}.") for n in outcomes), f"{name} did not run"
    broken = {
        n: o["detail"] for n, o in outcomes.items() if o["outcome"] not in ("passed", "skipped")
    }
    assert not broken, "\n\n".join(f"{n}:\n{d}" for n, d in broken.items())
    skipped = {n.split(".")[-1] for n, o in outcomes.items() if o["outcome"] == "skipped"}
    # Only the skips we wrote (with their reason); anything else skipping is a regression.
    assert skipped == set(SKIPS[stack]), f"unexpected skips: {skipped ^ set(SKIPS[stack])}"
