"""The click application → one entry per command, with its usage, help and parameters."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import click

from refgen.markdown import anchor, code, escape, one_line, table


@dataclass(frozen=True)
class ParamRow:
    """One option or argument of a command."""

    names: str  # "--limit", "-f, --file", "TOPIC"
    kind: str  # "option", "flag" or "argument"
    type: str
    default: str
    help: str


@dataclass(frozen=True)
class CommandDoc:
    """One command of the tree (groups included)."""

    path: str  # "sluice dlq show"
    usage: str
    help: str
    params: list[ParamRow]
    subcommands: list[str]


def _help_text(command: click.Command) -> str:
    r"""The command's docstring as click shows it, without click's ``\b`` (no-rewrap) markers."""
    text = inspect.cleandoc(command.help or command.short_help or "")
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b")


def _type_name(param: click.Parameter) -> str:
    if isinstance(param.type, click.Choice):
        return " | ".join(str(choice) for choice in param.type.choices)
    return param.type.name.upper() if param.type.name else ""


def _default(param: click.Parameter, ctx: click.Context) -> str:
    if isinstance(param, click.Option) and param.is_flag and not param.secondary_opts:
        return ""
    value = param.get_default(ctx, call=False)
    # click 8.3 marks "no default" with a sentinel object rather than None.
    if value is None or value == () or callable(value) or repr(value).startswith("Sentinel."):
        return ""
    if isinstance(param, click.Option) and param.secondary_opts and isinstance(value, bool):
        return param.opts[0] if value else param.secondary_opts[0]
    return str(value)


def param_row(param: click.Parameter, ctx: click.Context) -> ParamRow:
    """The documentation row of one parameter."""
    if isinstance(param, click.Argument):
        names = param.make_metavar(ctx) if _takes_ctx(param) else param.human_readable_name
        return ParamRow(names, "argument", _type_name(param), _default(param, ctx), "")
    if not isinstance(param, click.Option):
        raise TypeError(f"unexpected parameter kind {type(param).__name__}")
    names = ", ".join([*param.opts, *param.secondary_opts])
    if param.secondary_opts:
        names = " / ".join([", ".join(param.opts), ", ".join(param.secondary_opts)])
    kind = "flag" if param.is_flag else "option"
    if param.multiple:
        kind += ", repeatable"
    help_text = one_line(param.help or "")
    return ParamRow(
        names, kind, "" if param.is_flag else _type_name(param), _default(param, ctx), help_text
    )


def _takes_ctx(param: click.Argument) -> bool:
    """Click ≥ 8.2 passes the context to ``make_metavar``; older versions do not."""
    return "ctx" in inspect.signature(param.make_metavar).parameters


def commands(group: click.Command, name: str = "sluice") -> list[CommandDoc]:
    """Every command under ``group``, depth first, in the order ``--help`` lists them."""
    ctx = click.Context(group, info_name=name)
    docs = [_doc(group, ctx, name)]
    if isinstance(group, click.Group):
        for sub_name in group.list_commands(ctx):
            sub = group.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                docs += commands(sub, f"{name} {sub_name}")
    return docs


def _doc(command: click.Command, ctx: click.Context, path: str) -> CommandDoc:
    pieces = command.collect_usage_pieces(ctx)
    params = [
        param_row(p, ctx)
        for p in command.get_params(ctx)
        if not (isinstance(p, click.Option) and p.hidden)
    ]
    subcommands = []
    if isinstance(command, click.Group):
        subcommands = [n for n in command.list_commands(ctx) if not command.commands[n].hidden]
    return CommandDoc(path, f"{path} {' '.join(pieces)}", _help_text(command), params, subcommands)


def render(doc: CommandDoc) -> str:
    """One command as a section: usage, help, a table of its parameters, its subcommands."""
    level = "#" * min(doc.path.count(" ") + 2, 4)
    text = f"{level} {doc.path}\n\n```text\n{doc.usage}\n```\n\n"
    text += "\n\n".join(escape(one_line(p)) for p in doc.help.split("\n\n") if p.strip()) + "\n\n"
    rows = [
        (code(p.names), p.kind, code(p.type), code(p.default), escape(p.help))
        for p in doc.params
        if p.names not in ("--help",)
    ]
    if rows:
        text += table(("parameter", "kind", "type", "default", "help"), rows) + "\n"
    if doc.subcommands:
        links = ", ".join(f"[`{s}`](#{anchor(f'{doc.path} {s}')})" for s in doc.subcommands)
        text += f"Subcommands: {links}.\n\n"
    return text
