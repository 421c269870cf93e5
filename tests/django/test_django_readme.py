"""Every ```python block of docs/readme/django.md runs as written (memcached on a test server).

The lead merges that file into README.md, whose own test runs the blocks the same way.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django_helpers import REPO

DOC = REPO / "docs" / "readme" / "django.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_section_has_runnable_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_doc_block_runs(code: str, request: pytest.FixtureRequest) -> None:
    if "localhost:11211" in code:
        code = code.replace("localhost:11211", request.getfixturevalue("memcached").address)
    namespace: dict[str, Any] = {"__name__": "django_doc_block"}
    exec(compile(code, str(DOC), "exec"), namespace)
