"""Every ```python block of docs/readme/coherence.md runs as written (memcached swapped in)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.mq.test_cluster import _decorator_uses_compute_once

SECTION = Path(__file__).resolve().parents[2] / "docs" / "readme" / "coherence.md"
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION.read_text(), flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_section_block(code, memcached):
    if "@cached" in code and not _decorator_uses_compute_once():
        pytest.skip("chorde.decorators does not call the client's compute_once yet")
    code = code.replace("localhost:11211", memcached.address)
    namespace = {"__name__": "readme_block"}
    exec(compile(code, str(SECTION), "exec"), namespace)


def test_section_has_the_multiprocess_example():
    assert len(BLOCKS) >= 2 and "subprocess" in BLOCKS[0]
