"""Small Markdown helpers: escaping, code spans and tables."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

#: What a cell shows for "nothing" (no default, no topic).
DASH = "\u2013"

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_SPECIAL = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "*": r"\*", "|": r"\|"})


def escape(text: str) -> str:
    """``text`` as Markdown prose: HTML and emphasis characters escaped outside code spans."""
    parts: list[str] = []
    last = 0
    for match in _CODE_SPAN.finditer(text):
        parts.append(text[last : match.start()].translate(_SPECIAL))
        parts.append(match.group(0))
        last = match.end()
    parts.append(text[last:].translate(_SPECIAL))
    return "".join(parts)


def code(text: str) -> str:
    """``text`` as an inline code span (table cells split on no pipe inside one)."""
    if not text:
        return ""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def one_line(text: str) -> str:
    """Paragraphs joined into one line, for a table cell."""
    return " ".join(text.split())


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; cells must already be Markdown (escaped, one line each)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def anchor(text: str) -> str:
    """The id the ``toc`` extension gives a heading of plain ``text``."""
    slug = re.sub(r"[^\w\s-]", "", text.lower()).strip()
    return re.sub(r"[-\s]+", "-", slug)
