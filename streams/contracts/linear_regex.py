r"""Regular expressions that run in time linear in the text: RE2, never backtracking.

Every regex Sluice applies to untrusted text (guard's recognizers, the
prompt-injection patterns, the data contracts' ``regex`` rules) is compiled
here. Python's ``re`` backtracks: ``\\s*(?:\\s)\\s*`` after a keyword takes
seconds on a few thousand spaces, and no thread timeout can interrupt it.
RE2 guarantees a match in time linear in the input, at the price of two
features: backreferences and lookarounds (``(?=``, ``(?!``, ``(?<=``,
``(?<!``, ``(?P=name)``) do not compile; patterns are written without them.

RE2 differences a pattern author should know: ``\\b``, ``\\w``, ``\\d`` and
``\\s`` are ASCII-only (use ``\\pL`` / ``\\pN`` for letters and digits of any
script), verbose mode ``(?x)`` does not exist, and inline flags ``(?i)``,
``(?m)``, ``(?s)`` and scoped ``(?i:...)`` work as in Python.
"""

from __future__ import annotations

from typing import Any

import re2

from streams.errors import ConfigurationError

LinearPattern = Any
"""A compiled RE2 pattern (``search``, ``match``, ``finditer``, ``sub`` as in ``re``)."""


class LinearRegexError(ConfigurationError, ValueError):
    """A pattern RE2 cannot compile (a backreference, a lookaround, or a syntax error)."""


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
# Texts are bounded elsewhere (guard's max_input_chars, contracts' record size);
# RE2's default DFA budget (8 MiB) is enough for every shipped pattern.


def compile_linear(
    pattern: str, *, ignore_case: bool = False, multiline: bool = False, dot_all: bool = False
) -> LinearPattern:
    """Compile ``pattern`` with RE2, or raise ``LinearRegexError`` saying why it cannot run."""
    flags = "".join(
        flag for flag, on in (("i", ignore_case), ("m", multiline), ("s", dot_all)) if on
    )
    source = f"(?{flags}){pattern}" if flags else pattern
    try:
        return re2.compile(source, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise LinearRegexError(
            f"{pattern!r} cannot run in linear time (RE2: {detail}); "
            "rewrite it without backreferences or lookarounds"
        ) from None
