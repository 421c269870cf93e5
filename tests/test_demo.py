"""`python -m chorde.demo` (what `make demo` runs) completes and shows every step."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs():
    done = subprocess.run(
        [sys.executable, "-m", "chorde.demo"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for step in (
        "@cached cold call",
        "@cached warm call",
        "in refresh window: served at once  config v1",
        "after the background refresh       config v2",
        "tiered: promoted into L1           True",
        "slow_square computations           1",
    ):
        assert step in out, out


def test_demo_ends_with_what_was_shown_and_where_to_read_on():
    done = subprocess.run(
        [sys.executable, "-m", "chorde.demo"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.rstrip().splitlines()[-3:]
    assert last[0].startswith("Shown: ") and last[2].startswith("Read on: "), last
    import chorde

    assert ("compiled speedups" if chorde.speedups_enabled() else "pure Python") in last[1]
    pages = re.findall(r"docs/[\w/.-]+\.md", last[2])
    assert pages
    if (REPO / "docs").is_dir():  # a checkout: the pages named exist
        assert [p for p in pages if not (REPO / p).is_file()] == []
