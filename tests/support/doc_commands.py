"""The shell commands of the documentation's code blocks: found, split, and checked against the CLI.

A fenced block whose language is ``bash``, ``console``, ``shell`` or ``sh`` holds
commands (in a ``console`` block, the lines that start with ``$ ``). A block
is *illustrative* (shown, never checked) when the line before its fence is an
HTML comment starting ``<!-- illustrative``, or its info string says
``title="illustrative"``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
from click.core import ParameterSource

ROOT = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = frozenset({"bash", "console", "shell", "sh"})
#: Programs a checked block may run besides ``sluice`` (and the repository's own scripts).
KNOWN_PROGRAMS = frozenset(
    {"export", "source", "cd", "python", "python3", "pip", ".venv/bin/python", ".venv/bin/pip"}
)
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<info>[^`]*)$")
_ILLUSTRATIVE_COMMENT = re.compile(r"^\s*<!--\s*illustrative\b")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&"})


@dataclass(frozen=True)
class Block:
    """One fenced shell block of a page."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    illustrative: bool
    text: str

    @property
    def where(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}"


@dataclass(frozen=True)
class Command:
    """One simple command of a block: its words, environment assignments removed."""

    block: Block
    argv: tuple[str, ...]
    source: str


def blocks(path: Path) -> list[Block]:
    """Every fenced shell block of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        fence, info = match.group("fence"), match.group("info").strip()
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        language = info.split()[0].lower() if info else ""
        if language in SHELL_LANGUAGES:
            before = next((line for line in reversed(lines[:index]) if line.strip()), "")
            illustrative = bool(_ILLUSTRATIVE_COMMENT.match(before)) or (
                'title="illustrative"' in info
            )
            body = "\n".join(line[len(match.group("indent")) :] for line in lines[index + 1 : end])
            found.append(Block(path, index + 1, language, illustrative, body))
        index = end + 1
    return found


def _logical_lines(block: Block) -> Iterator[str]:
    """The block's command lines: continuations joined, console prompts stripped."""
    pending = ""
    for raw in block.text.splitlines():
        line = raw
        if block.language == "console" and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def without_substitutions(line: str) -> str:
    """``line`` with each ``$(...)`` (quotes and nesting respected) replaced by one word."""
    out: list[str] = []
    index, quote = 0, ""
    while index < len(line):
        char = line[index]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif line.startswith("$(", index):
            depth, inner_quote, index = 1, "", index + 2
            while index < len(line) and depth:
                inner = line[index]
                if inner_quote:
                    inner_quote = "" if inner == inner_quote else inner_quote
                elif inner in "'\"":
                    inner_quote = inner
                elif inner == "(":
                    depth += 1
                elif inner == ")":
                    depth -= 1
                index += 1
            out.append("SUBSTITUTED")
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _words(line: str) -> list[str]:
    lexer = shlex.shlex(without_substitutions(line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def commands(block: Block) -> list[Command]:
    """The simple commands of a block (split on ``&&``, ``;``, ``|``, ``&``)."""
    found: list[Command] = []
    for line in _logical_lines(block):
        current: list[str] = []
        for word in [*_words(line), ";"]:
            if word in _SEPARATORS:
                while current and _ASSIGNMENT.match(current[0]):
                    current.pop(0)
                if current:
                    found.append(Command(block, tuple(current), line.strip()))
                current = []
            else:
                current.append(word)
    return found


def page_commands(path: Path) -> list[Command]:
    """The commands of every block of a page that is not illustrative."""
    return [c for b in blocks(path) if not b.illustrative for c in commands(b)]


def check_sluice(main: click.Command, args: list[str]) -> str | None:
    """Why ``sluice ARGS`` would not parse against the click app, or None when it does.

    Subcommands must exist, options must be known, values must fit their types
    (files given to ``click.Path(exists=True)`` must exist, relative to the
    current directory) and required arguments must be there. Nothing runs.
    """
    command, path = main, ["sluice"]
    while isinstance(command, click.Group):
        if not args or args[0].startswith("-"):
            return f"`{' '.join(path)}` needs a subcommand, got {args[:1] or 'nothing'}"
        name, args = args[0], args[1:]
        sub = command.get_command(click.Context(command, info_name=path[-1]), name)
        if sub is None:
            return f"`{' '.join(path)}` has no command {name!r}"
        command, path = sub, [*path, name]
    ctx = command.make_context(" ".join(path), list(args), resilient_parsing=True)
    if ctx.args:
        return f"`{' '.join(path)}`: unknown options or extra arguments {ctx.args}"
    for param in command.params:
        if not param.expose_value or param.name is None:
            continue
        value = ctx.params.get(param.name)
        shown = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
        given = ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
        if given and value is None:
            return f"`{' '.join(path)}`: invalid value for {shown}"
        if param.required and value is None:
            return f"`{' '.join(path)}`: missing {shown}"
    return None


def check(main: click.Command, command: Command) -> str | None:
    """Why a command of a checked block is not known to work, or None."""
    program = command.argv[0]
    if program == "sluice":
        return check_sluice(main, list(command.argv[1:]))
    if program in KNOWN_PROGRAMS or (ROOT / program).is_file():
        return None
    return (
        f"{command.block.where}: unknown program {program!r} in `{command.source}`; "
        "mark the block illustrative if it cannot be checked"
    )
