"""Helpers shared by the chorde_django tests (a plain module: conftest is not importable)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["REPO", "record_suite_report", "subprocess_env", "suite_reports"]

REPO = Path(__file__).resolve().parents[2]

#: Reports of Django-suite runs, printed at the end of the session by conftest.
suite_reports: list[dict[str, Any]] = []


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for child Python processes: the repo first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def record_suite_report(report: dict[str, Any]) -> None:
    """Remember a Django-suite run for the end-of-session summary."""
    suite_reports.append(report)
