"""Values from outside are printed as the characters they are: never markup, never control."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from streams.cli.connect import connector_table
from streams.cli.drift import alert_table
from streams.cli.output import cell, plain, safe
from streams.sdk.connect_client import ConnectorStatus, TaskStatus

HOSTILE = {
    "[/bold]": "[/bold]",
    "[red]x[/red]": "[red]x[/red]",
    "\x1b[2J": "\\x1b[2J",
    "\x1b]0;pwned\x07": "\\x1b]0;pwned\\x07",
    "a\rb": "a\\x0db",
    "\x9b2J": "\\x9b2J",
    "abc\u202edcba": "abc\\u202edcba",
    "back\\": "back\\",
    "back\\[bold]x": "back\\[bold]x",
}


def render(*renderables, color: bool = True) -> str:
    """What a terminal receives (colours on: Sluice's own styles are escape sequences)."""
    out = io.StringIO()
    console = Console(
        file=out,
        width=200,
        force_terminal=color,
        color_system="truecolor" if color else None,
        highlight=False,
    )
    for renderable in renderables:
        console.print(renderable, soft_wrap=True)
    return out.getvalue()


def no_hostile_control(output: str) -> None:
    """Only SGR colour sequences (``\\x1b[...m``) of Sluice's own styles reach the terminal."""
    assert "\r" not in output and "\x9b" not in output and "\u202e" not in output
    assert "\x1b[2J" not in output and "\x1b]" not in output


@pytest.mark.parametrize(("value", "shown"), HOSTILE.items())
def test_a_cell_shows_the_characters_of_the_value(value, shown):
    assert render(cell(value), color=False) == shown + "\n"
    no_hostile_control(render(cell(value, "cyan")))


@pytest.mark.parametrize(("value", "shown"), HOSTILE.items())
def test_safe_values_inside_markup_are_text(value, shown):
    assert render(f"[cyan]{safe(value)}[/cyan] after", color=False) == f"{shown} after\n"
    no_hostile_control(render(f"[cyan]{safe(value)}[/cyan]"))


def test_newlines_break_cells_but_not_lines():
    assert plain("a\nb") == "a\\x0ab"
    assert plain("a\nb", multiline=True) == "a\nb"
    assert plain("tab\there") == "tab\there"
    assert plain(None) == ""
    assert render(f"{safe('one' + chr(10) + 'fake line')}", color=False).count("\n") == 1


def test_tables_of_hostile_values_render():
    table = Table(title=cell("[/bold] title"))
    table.add_column(cell("[/b]"))
    for value in HOSTILE:
        table.add_row(cell(value))
    output = render(table, color=False)
    for shown in HOSTILE.values():
        assert shown in output
    no_hostile_control(render(table))


def test_connector_table_shows_what_the_worker_says_as_text():
    status = ConnectorStatus(
        name="[/bold]files",
        type="source\x1b[2J",
        state="RUNNING",
        worker="10.0.0.1:8083\r[red]",
        tasks=[TaskStatus(0, "FAILED", "w"), TaskStatus(1, "[/x]", "w")],
    )
    output = render(connector_table([status]), color=False)
    assert "[/bold]files" in output and "source\\x1b[2J" in output
    assert "0: FAILED, 1: [/x]" in output
    no_hostile_control(render(connector_table([status])))


def test_drift_alerts_with_hostile_signal_names_render():
    alert = {
        "detected_at": 0,
        "signal_name": "[/bold]",
        "subject": "\x1b[2Jtickets",
        "detector": "psi",
        "stream": "category",
        "statistic": 0.5,
        "threshold": 0.2,
        "reference": {"top": {"[red]a": 0.9}},
        "current": {"top": {"[red]a": 0.1, "\rb": 0.9}},
        "window_size": 100,
        "window_end": {"partition": 0, "offset": 9},
        "severity": "[blink]high",
    }
    output = render(alert_table([alert], "[/title]"), color=False)
    for shown in ("[/bold]", "\\x1b[2Jtickets", "\\x0db: 0% -> 90%", "[blink]high", "[/title]"):
        assert shown in output
    no_hostile_control(render(alert_table([alert], "[/title]")))
