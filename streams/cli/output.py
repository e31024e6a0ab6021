r"""Printing values that came from outside on an operator's terminal, safely.

Tenant ids, topic names in headers, error messages, category values, connector
traces: whatever a producer, Kafka, ClickHouse or a Connect worker hands the CLI
is data, never markup and never terminal control. rich would read ``[/bold]`` in
a value as a closing tag (and fail on it) and a terminal obeys ``\x1b[2J`` or
``\r`` (clearing the screen, overwriting a line), so every such value goes
through one of these helpers before it is printed:

- ``cell(value)``: a table cell (or title, or column header) that rich never
  parses as markup;
- ``safe(value)``: the value escaped for a markup string such as
  ``f"[cyan]{safe(topic)}[/cyan]"``;
- ``plain(value)``: the value as text with every control character shown as a
  visible escape (``\x1b``), for output that is not rich's (CSV on a terminal).

Control characters are shown, not dropped, so an operator can see that a value
held them.
"""

from __future__ import annotations

import re

from rich.markup import escape
from rich.style import StyleType
from rich.text import Text

# C0 controls but tab and newline, DEL, C1 controls (0x9b is an 8-bit CSI), and the
# Unicode bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(value: object, *, multiline: bool = False) -> str:
    r"""``value`` as text with every control character written as an escape (``\x1b``).

    Tabs are kept; newlines are kept only when ``multiline`` (a table cell may span
    lines, a line of output may not pretend to be two).
    """
    text = "" if value is None else str(value)
    pattern = _CONTROL if multiline else _CONTROL_OR_NEWLINE
    return pattern.sub(_visible, text)


def cell(value: object, style: StyleType = "") -> Text:
    """``value`` as a rich ``Text``: never parsed as markup, control characters escaped."""
    return Text(plain(value, multiline=True), style=style)


def safe(value: object, *, multiline: bool = False) -> str:
    """``value`` escaped for a rich markup string, control characters escaped."""
    return escape(plain(value, multiline=multiline))
