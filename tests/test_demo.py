"""`python -m chorde.demo` (what `make demo` runs) completes and shows every step."""

from __future__ import annotations

import subprocess
import sys


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
