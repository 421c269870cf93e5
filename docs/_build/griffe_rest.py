"""A griffe extension: the reStructuredText habits of chorde's docstrings, as Markdown.

- Sphinx roles (``:class:`~chorde.x.Y```, ``:meth:`get```) become code spans; a dotted target
  also becomes an optional cross-reference (a link when the API reference renders it, plain
  code when not, never a broken link).
- ``Usage::`` (a paragraph ending in ``::`` before an indented literal block) loses one colon;
  the indented block is a Markdown code block as it stands.
- A definition list (a term line, its description indented below it, as in module
  docstrings) becomes a bold term and an unindented paragraph, which Markdown would otherwise
  show as a code block.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    target = target.strip()
    shown = target.rsplit(".", 1)[-1] if tilde else target
    if "." in target and not target.startswith("."):
        return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'
    return f"`{shown}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rest_to_markdown(text: str) -> str:
    """The docstring ``text`` with the reST habits above turned into Markdown."""
    text = _ROLE.sub(_role, text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    literal = False  # inside an indented literal block introduced by "::"
    after_definition = False  # the previous line ended a definition's body
    while i < len(lines):
        line = lines[i]
        if literal:
            if line.strip() and _indent(line) == 0:
                literal = False
            else:
                out.append(line)
                i += 1
                continue
        if line.rstrip().endswith("::"):
            # "Usage::" reads "Usage:"; a bare "::" (or "text ::") introduces without a colon.
            head = line.rstrip()[:-2]
            out.append(head + ":" if head.strip() and not head.endswith(" ") else head.rstrip())
            literal = True
            i += 1
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        is_term = (
            line.strip()
            and _indent(line) == 0
            and not line.startswith((":", "*", "-", "#", ">"))
            and nxt.strip()
            and _indent(nxt) >= 4
            # a term starts a paragraph, or follows the previous definition
            and (not out or not out[-1].strip() or after_definition)
        )
        after_definition = False
        if is_term:
            if out and out[-1].strip():
                out.append("")
            out.extend([f"**{line.strip()}**", ""])
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) >= 4):
                out.append(lines[i][4:] if _indent(lines[i]) >= 4 else lines[i])
                i += 1
            after_definition = True
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RestToMarkdown(Extension):
    """Rewrite every loaded docstring with :func:`rest_to_markdown`."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and docstring.value:
            docstring.value = rest_to_markdown(docstring.value)
