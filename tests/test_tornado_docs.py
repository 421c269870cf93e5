"""The tornado README section (docs/readme/tornado.md): every python block runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "readme" / "tornado.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_doc_block(code, request):
    if "localhost:11211" in code:
        code = code.replace("localhost:11211", request.getfixturevalue("memcached").address)
    exec(compile(code, str(DOC), "exec"), {"__name__": "readme_block"})


def test_doc_has_blocks():
    assert len(BLOCKS) >= 2
