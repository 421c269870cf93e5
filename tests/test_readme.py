"""Every ```python block of the README runs as written (memcached ones on a test server)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _title(code: str) -> str:
    lines = [line.strip() for line in code.splitlines() if line.strip()]
    body = [line for line in lines if "import" not in line and not line.startswith("#")]
    return (body or lines or ["empty"])[0][:40]


@pytest.mark.parametrize("code", BLOCKS, ids=[_title(b) for b in BLOCKS])
def test_readme_block(code, request, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp() lands in tmp_path
    if "localhost:11211" in code:
        server = request.getfixturevalue("memcached")
        code = code.replace("localhost:11211", server.address)
    namespace = {"__name__": "readme_block"}
    try:
        exec(compile(code, str(README), "exec"), namespace)
    finally:
        from chorde.clients.base import BaseCacheClient

        for value in list(namespace.values()):
            if isinstance(value, BaseCacheClient):
                value.close()


def test_readme_covers_every_feature():
    text = README.read_text()
    for heading in (
        "## Shared caches: memcached",
        "## Multilevel caches",
        "## Namespaces",
        "FilesCacheClient",
        "## Decorators",
        "### Write-behind",
        "## Cluster coherence",
        "## Django",
        "## Flask",
        "## Tornado",
        "## Starlette",
    ):
        assert heading in text


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    head = text[: text.index("## Install")]
    assert "make demo" in head and "make test" in head
