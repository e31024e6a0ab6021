"""`sluice dlq show|replay` output: header values are the producer's, so they are shown as text."""

from __future__ import annotations

import base64
import dataclasses

from click.testing import CliRunner

from streams.cli import main
from streams.cli.dlq import letter_lines, replay_keyring, summary_lines
from streams.runtime.dead_letters import DlqInfo
from streams.runtime.dlq_replay import DeadLetter, ReplaySummary
from streams.runtime.sealing import new_key
from streams.settings import Settings, get_settings
from streams.stack.secrets import ensure_dead_letter_key
from tests.unit.cli.test_output import no_hostile_control, render


def dead_letter(**info: object) -> DeadLetter:
    fields = {
        "processor": "validate",
        "stage": "contract",
        "error_class": "ContractViolation",
        "message": "priority: is not one of [low, medium] [enum]",
        "topic": "raw.support_tickets",
        "partition": 2,
        "offset": 41,
        "ts": 0,
    } | info
    return DeadLetter(0, 7, 1_700_000_000_000, b"k", 120, DlqInfo(**fields), 0)  # type: ignore[arg-type]


def test_a_plain_dead_letter_reads_as_before():
    output = render(*letter_lines([dead_letter()]), color=False)
    assert output == (
        "raw.support_tickets[2]@41 2023-11-14 22:13:20 validate/contract ContractViolation 120 B\n"
        "    priority: is not one of [low, medium] [enum]\n"
    )


def test_hostile_headers_are_shown_never_obeyed():
    letters = [
        dead_letter(
            topic="[/bold]raw",
            processor="[red]validate[/red]",
            stage="\x1b[2J",
            error_class="[/yellow]X",
            message="fine\r\x1b[1A[green]all records replayed[/green]\nraw.x[0]@1 forged line",
        )
    ]
    output = render(*letter_lines(letters), color=False)
    assert "[/bold]raw[2]@41" in output
    assert "[red]validate[/red]/\\x1b[2J [/yellow]X" in output
    assert "fine\\x0d\\x1b[1A[green]all records replayed[/green]\\x0araw.x[0]@1 forged line" in (
        output
    )
    assert output.count("\n") == 2, "a newline in a header cannot forge a line"
    no_hostile_control(render(*letter_lines(letters)))


def test_the_summary_names_what_was_not_sent():
    summary = ReplaySummary(
        replayed=3,
        by_target={"raw.t": 3},
        skipped=1,
        foreign={"inference.requests.safe": 2, "\x1b[2J[/bold]": 1},
    )
    lines = render(*summary_lines(summary, dry_run=False), color=False).splitlines()
    assert lines[0] == "replayed 3 records: 3 to raw.t"
    assert lines[1] == "skipped 1 records without a sluice.error.topic header"
    assert lines[2].startswith(
        "skipped 3 records whose sluice.error.topic header names another topic "
        "(2 naming inference.requests.safe, 1 naming \\x1b[2J[/bold]): not sent"
    )
    dry = render(*summary_lines(summary, dry_run=True), color=False)
    assert "would replay 3 records" in dry and "would skip 3 records" in dry and "--to" in dry
    assert summary_lines(ReplaySummary(), dry_run=False)[0].plain == (
        "replayed 0 records: nothing new"
    )


def test_replay_to_a_topic_outside_the_catalog_is_refused_before_any_kafka_call():
    result = CliRunner().invoke(
        main, ["dlq", "replay", "raw.support_tickets", "--to", "elsewhere.topic"]
    )
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "error: --to 'elsewhere.topic' is not a topic of the catalog" in said
    assert "inference.requests" in said


def test_replay_to_a_dead_letter_topic_is_refused():
    result = CliRunner().invoke(
        main, ["dlq", "replay", "raw.support_tickets", "--to", "inference.requests.dlq"]
    )
    assert result.exit_code == 1
    assert "is a dead-letter topic" in " ".join(result.output.split())


def test_an_encrypted_dead_letter_says_so_with_its_key_id():
    letter = dataclasses.replace(dead_letter(), key_id="0123456789abcdef")
    first = render(*letter_lines([letter]), color=False).splitlines()[0]
    assert first.endswith("ContractViolation 120 B, encrypted (key 0123456789abcdef)")


def test_replay_of_an_encrypted_topic_without_a_key_is_refused_naming_the_setting(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SLUICE_STACK__STATE_DIR", str(tmp_path))  # no local stack key either
    monkeypatch.delenv("SLUICE_DEAD_LETTERS__ENCRYPTION_KEY", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["dlq", "replay", "inference.requests"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "inference.requests.dlq keeps its payloads encrypted" in said
    assert "SLUICE_DEAD_LETTERS__ENCRYPTION_KEY is not set" in said


def test_replay_falls_back_to_the_local_stack_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_STACK__STATE_DIR", str(tmp_path))
    settings = Settings()
    assert replay_keyring(settings).current is None
    assert ensure_dead_letter_key(settings)
    local = replay_keyring(settings).current
    assert local is not None and len(local) == 32
    explicit = new_key()
    monkeypatch.setenv("SLUICE_DEAD_LETTERS__ENCRYPTION_KEY", explicit)
    assert replay_keyring(Settings()).current == base64.b64decode(explicit)
