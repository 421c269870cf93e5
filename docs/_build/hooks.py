"""MkDocs hooks: publish files that live outside docs/ under the names the pages use.

The benchmark chart stays where the benchmarks write it (benchmarks/results.png); the
performance page includes benchmarks/RESULTS.md, whose image link is relative, so the chart
is published beside that page instead of being copied into docs/ (a copy would go stale).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = {"results.png": ROOT / "benchmarks" / "results.png"}


def on_files(files: Files, config: Any) -> Files:
    for uri, source in PUBLISHED.items():
        if source.exists():
            files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files
