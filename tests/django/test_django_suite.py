"""Django's own cache-backend tests (``BaseCacheTests``) against ChordeCache.

The test file comes from the sdist of the installed Django (see ``django_tests_dir``);
tests/django/django_suite_runner.py runs it in a subprocess under Django's test runner,
once per stack, and reports every test's outcome. Every test must pass except the few
skipped there with their reason (``SKIPS``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django_helpers import record_suite_report, subprocess_env
from django_suite_runner import SKIPS

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
    assert len(outcomes) >= 50, f"only {len(outcomes)} tests ran: {sorted(outcomes)}"
    broken = {
        n: o["detail"] for n, o in outcomes.items() if o["outcome"] not in ("passed", "skipped")
    }
    assert not broken, "\n\n".join(f"{n}:\n{d}" for n, d in broken.items())
    skipped = {n for n, o in outcomes.items() if o["outcome"] == "skipped"}
    # Only the skips we wrote (with their reason); anything else skipping is a regression.
    assert skipped == set(SKIPS[stack]), f"unexpected skips: {skipped ^ set(SKIPS[stack])}"
