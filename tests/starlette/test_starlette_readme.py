"""Every ```python block of docs/readme/starlette.md runs as written (memcached on a test server).

The lead merges that file into README.md, whose own test runs the blocks the same way;
this keeps the section honest before the merge.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

SECTION = Path(__file__).resolve().parents[2] / "docs" / "readme" / "starlette.md"
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION.read_text(), flags=re.S)


def test_the_section_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_section_block(code: str, request: pytest.FixtureRequest) -> None:
    if "localhost:11211" in code:
        server = request.getfixturevalue("memcached")
        code = code.replace("localhost:11211", server.address)
    namespace: dict[str, Any] = {"__name__": "readme_block"}
    try:
        exec(compile(code, str(SECTION), "exec"), namespace)
    finally:
        from chorde.clients.base import BaseCacheClient

        for value in list(namespace.values()):
            if isinstance(value, BaseCacheClient):
                value.close()
