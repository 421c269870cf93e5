"""Every ```python block of README.md and docs/**/*.md runs, twice, as written.

Each block runs once as a script and then again pasted line by line into an interactive
console (``code.InteractiveConsole``, which compiles the way the ``>>>`` prompt does), in a
fresh namespace each time but against the same memcached and temporary directory. So every
block is correct, safe to run twice in a row (nothing it leaves behind breaks a rerun), and
pasteable at a Python prompt: no blank line inside an indented block (the prompt would end
the block there), a blank line after each one (the prompt rejects a statement that follows
an indented block directly).

Blocks that talk to memcached name ``localhost:11211`` (Redis: ``localhost:6379``); the
test starts a real server and points them at it. Blocks that must not run (shell,
configuration files, other languages) use another fence (```sh, ```text, ```toml ...).
"""

from __future__ import annotations

import code
import re
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# A fence opens with ``` at any indentation (admonitions indent theirs) and an info string.
_FENCE = re.compile(
    r"^(?P<indent> *)```(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=indent)```", re.S | re.M
)
# Fences whose blocks are not Python, or are Python on purpose not run: say which in the page.
NOT_RUN = {"sh", "shell", "console", "text", "toml", "ini", "yaml", "json", "html", "jinja"}
MEMCACHED = "localhost:11211"
REDIS = "localhost:6379"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the first code line, 1-based
    info: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    text = path.read_text()
    blocks = []
    for m in _FENCE.finditer(text):
        indent = len(m["indent"])
        body = "".join(line[indent:] for line in m["body"].splitlines(keepends=True))
        line = text.count("\n", 0, m.start()) + 2
        blocks.append(Block(path, line, m["info"].strip(), body))
    return blocks


ALL_BLOCKS = [block for path in SOURCES for block in _blocks(path)]
PYTHON = [block for block in ALL_BLOCKS if block.info == "python"]


class _Console(code.InteractiveConsole):
    """An interactive console that records errors instead of printing them."""

    def __init__(self, namespace: dict[str, Any], filename: str) -> None:
        super().__init__(namespace, filename=filename)
        self.errors: list[str] = []

    def showsyntaxerror(self, filename: str | None = None, **kwargs: Any) -> None:
        self.errors.append(traceback.format_exc())

    def showtraceback(self) -> None:
        self.errors.append(traceback.format_exc())


def paste(code_text: str, namespace: dict[str, Any], filename: str) -> None:
    """Feed ``code_text`` to an interactive console line by line, as a paste at ``>>>``.

    Raises AssertionError naming the line where the prompt would have failed.
    """
    console = _Console(namespace, filename)
    more = False
    for number, line in enumerate(code_text.splitlines(), 1):
        more = console.push(line)
        if console.errors:
            raise AssertionError(
                f"{filename}: pasted at a >>> prompt, line {number} ({line!r}) fails:\n"
                + console.errors[0]
            )
    if more:
        console.push("")  # the Enter that ends a trailing indented block
        if console.errors:
            raise AssertionError(f"{filename}: pasted, the last block fails:\n{console.errors[0]}")


def _close_clients(namespace: dict[str, Any]) -> None:
    from chorde.clients.base import BaseCacheClient

    for value in list(namespace.values()):
        if isinstance(value, BaseCacheClient):
            value.close()


@pytest.mark.parametrize("block", PYTHON, ids=[b.where for b in PYTHON])
def test_block_runs_twice_and_pastes(block: Block, request, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp() lands in tmp_path
    source = block.code
    if MEMCACHED in source:
        server = request.getfixturevalue("memcached")
        source = source.replace(MEMCACHED, server.address)
    if REDIS in source:
        from tests.redis_servers import start_redis

        source = source.replace(REDIS, start_redis(request).address)
    script: dict[str, Any] = {"__name__": "__main__"}
    try:
        exec(compile(source, block.where, "exec"), script)
    finally:
        _close_clients(script)
    pasted: dict[str, Any] = {"__name__": "__main__"}
    try:
        paste(source, pasted, block.where)
    finally:
        _close_clients(pasted)


def test_every_fence_says_what_it_is() -> None:
    """A Python block under another name (```py, ```python3, a bare ```) would escape the
    run above; every fence is either ```python or a known non-Python language."""
    odd = [f"{b.where}: ```{b.info}" for b in ALL_BLOCKS if b.info not in NOT_RUN | {"python"}]
    assert not odd, "fences that are neither run nor known not to be Python:\n" + "\n".join(odd)


def test_there_are_blocks_everywhere_expected() -> None:
    pages = {b.path for b in PYTHON}
    assert ROOT / "README.md" in pages
    assert len(pages) >= 15, sorted(str(p.relative_to(ROOT)) for p in pages)


@pytest.mark.parametrize(
    "bad, line",
    [
        # A blank line inside a function body ends it at the prompt; the return is then an
        # indentation error.
        ("def f():\n    x = 1\n\n    return x\n", 4),
        # A statement straight after an indented block, with no blank line between.
        ("def f():\n    return 1\nf()\n", 3),
        ("x = 1\nraise ValueError('boom')\n", 2),
    ],
)
def test_paste_rejects_what_the_prompt_rejects(bad: str, line: int) -> None:
    with pytest.raises(AssertionError, match=f"line {line}"):
        paste(bad, {"__name__": "__main__"}, "example")


def test_paste_accepts_what_the_prompt_accepts() -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    # A comment line inside a block, and a blank line inside a string, do not end the block.
    ok = (
        'def f():\n    # a comment\n    s = """a\n\nb"""\n    return s\n'
        '\nassert f() == "a\\n\\nb"\n'
    )
    paste(ok, namespace, "example")
    assert namespace["f"]() == "a\n\nb"


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    head = text[: text.index("\n## ", text.index("\n## ") + 1)]  # title, intro, first section
    assert "make demo" in head and "make test" in head


def test_readme_links_resolve() -> None:
    """The README is read on its own (a repository page, an sdist), outside the MkDocs build
    that checks the docs' links; its relative links must name files that exist."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    relative = [t for t in targets if "://" not in t]
    assert relative, "the README links into the docs"
    missing = [t for t in relative if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def _griffe_rest() -> Any:
    pytest.importorskip("griffe", reason="the docs extra (make docs installs it)")
    import importlib.util

    path = ROOT / "docs" / "_build" / "griffe_rest.py"
    spec = importlib.util.spec_from_file_location("griffe_rest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_docstrings_become_markdown() -> None:
    convert = _griffe_rest().rest_to_markdown
    text = convert(
        "See :class:`~chorde.clients.base.BaseCacheClient` and :meth:`get`.\n"
        "\n"
        "Usage::\n"
        "\n"
        "    c.get(1)\n"
        "\n"
        "``inproc``\n"
        "    a private cache,\n"
        "    in-process.\n"
        "``memcached``\n"
        "    a shared one.\n"
        "\n"
        ":param x: a parameter\n"
        "    whose description goes on.\n"
    )
    assert '<autoref identifier="chorde.clients.base.BaseCacheClient" optional>' in text
    assert "<code>BaseCacheClient</code></autoref>" in text and "`get`" in text
    assert "Usage:\n\n    c.get(1)\n" in text  # the literal block stays an indented block
    assert "**``inproc``**\n\na private cache,\nin-process.\n" in text
    assert "**``memcached``**\n\na shared one.\n" in text  # a term right after a definition
    assert ":param x: a parameter\n    whose description goes on." in text  # untouched
