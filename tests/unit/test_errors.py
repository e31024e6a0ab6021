"""One error root, one documented ``RecordError`` subclass per dead-letter kind, one CLI line."""

from __future__ import annotations

import ast
import importlib

import click
import pytest
from click.testing import CliRunner

from streams.cli import SluiceGroup
from streams.errors import (
    ConfigurationError,
    RecordError,
    SluiceError,
    TransientError,
    inference_refusal,
    record_error_kinds,
    value_free,
    value_free_traceback,
)
from streams.settings import PROJECT_ROOT

PACKAGES = ("streams", "processors")


def _modules() -> dict[str, ast.Module]:
    """Every module of Sluice's packages, parsed (not imported)."""
    parsed = {}
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
            parsed[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return parsed


def _base_names(node: ast.ClassDef) -> set[str]:
    names = set()
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.add(base.id)
        elif isinstance(base, ast.Attribute):
            names.add(base.attr)
    return names


def _classes() -> list[tuple[str, ast.ClassDef]]:
    return [
        (module, node)
        for module, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    ]


def _modules_defining_record_errors() -> set[str]:
    """Modules that declare a subclass of RecordError, however deep (found in the source)."""
    classes = _classes()
    kinds, modules = {"RecordError"}, set()
    while True:
        found = {(m, c.name) for m, c in classes if _base_names(c) & kinds}
        if {name for _, name in found} <= kinds:
            return modules | {m for m, _ in found}
        kinds |= {name for _, name in found}
        modules |= {m for m, _ in found}


@pytest.fixture(scope="module")
def kinds() -> dict[str, type[RecordError]]:
    for module in sorted(_modules_defining_record_errors()):
        importlib.import_module(module)
    return record_error_kinds()


def _all_subclasses(cls: type) -> list[type]:
    found, pending = [], list(cls.__subclasses__())
    while pending:
        sub = pending.pop()
        found.append(sub)
        pending += sub.__subclasses__()
    return found


# -- dead-letter kinds ------------------------------------------------------------------------
def test_every_kind_is_declared_in_one_place(kinds):
    assert _modules_defining_record_errors() == {"streams.errors"}
    assert {kind.__module__ for kind in kinds.values()} == {"streams.errors"}


def test_kind_names_are_unique(kinds):
    names = [cls.__name__ for cls in _all_subclasses(RecordError)]
    assert len(names) == len(set(names)), sorted(names)
    assert set(kinds) == {n for n in names if not n.startswith("_")}


def test_the_private_families_are_no_kinds(kinds):
    assert not [name for name in kinds if name.startswith("_")]
    assert {"EmptyRecord", "ContractViolation", "ProcessingFailed", "UnknownModel"} <= set(kinds)


def test_each_kind_names_itself_in_the_header(kinds):
    for name, kind in kinds.items():
        error = kind("what happened")
        assert error.error_class == name
        assert (error.message, str(error)) == ("what happened", "what happened")
        assert isinstance(error, RecordError) and isinstance(error, SluiceError)


def test_error_class_cannot_be_overwritten(kinds):
    error = kinds["CorruptAvro"]("bad body")
    with pytest.raises(AttributeError):
        error.error_class = "SomethingElse"  # type: ignore[misc]


def test_each_kind_has_its_own_docstring_and_a_stage(kinds):
    for name, kind in kinds.items():
        assert (vars(kind).get("__doc__") or "").strip(), f"{name} has no docstring"
        assert isinstance(kind.default_stage, str) and kind.default_stage, name
        assert kind("x").stage == kind.default_stage


def test_stage_details_and_outputs_are_kept(kinds):
    error = kinds["UnknownMagicByte"](
        "first byte 0x7b", stage="parse", details={"exception": "X"}, outputs=["out"]
    )
    assert (error.stage, error.details, error.outputs) == ("parse", {"exception": "X"}, ["out"])


def test_inference_codes_map_to_kinds(kinds):
    for code, name in [
        ("unknown_model", "UnknownModel"),
        ("input_too_long", "InputTooLong"),
        ("invalid_request", "InvalidRequest"),
        ("backend_rejected", "BackendRejected"),
    ]:
        kind = inference_refusal(code)
        assert kind is kinds[name]
        assert kind("x").stage == "infer"
    with pytest.raises(KeyError):
        inference_refusal("no_such_code")


# -- one root -----------------------------------------------------------------------------
def _public_exception_classes() -> list[tuple[str, str]]:
    """(module, class) of every public class of Sluice's packages whose name ends in Error."""
    return sorted(
        (module, node.name)
        for module, node in _classes()
        if node.name.endswith("Error") and not node.name.startswith("_")
    )


@pytest.mark.parametrize(("module", "name"), _public_exception_classes())
def test_every_error_derives_from_the_root(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, SluiceError), f"{module}.{name} does not derive from SluiceError"


def test_families_are_distinct():
    for family in (ConfigurationError, TransientError, RecordError):
        assert issubclass(family, SluiceError)
    assert not issubclass(ConfigurationError, TransientError | RecordError)
    assert not issubclass(TransientError, RecordError)


# -- the CLI ---------------------------------------------------------------------------------
def _group(exc: Exception) -> click.Group:
    @click.group(cls=SluiceGroup)
    def cli() -> None:
        pass

    @cli.command()
    def fail() -> None:
        raise exc

    return cli


def _one_error_line(exc: Exception) -> str:
    result = CliRunner().invoke(_group(exc), ["fail"])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "exc",
    [
        ConfigurationError("topics missing. Run `sluice schemas apply` first."),
        TransientError("ClickHouse unavailable: connection refused"),
        RecordError("a record the command could not read"),
    ],
)
def test_the_cli_prints_a_sluice_error_as_one_line(exc):
    assert _one_error_line(exc) == f"error: {exc}"


def test_a_long_message_stays_one_line_and_markup_is_literal():
    message = "partitions [0, 1] of [bold]x[/bold] " + "y" * 300
    assert _one_error_line(ConfigurationError(message)) == f"error: {message}"


def test_other_exceptions_keep_their_traceback():
    result = CliRunner().invoke(_group(ZeroDivisionError("a bug")), ["fail"])
    assert isinstance(result.exception, ZeroDivisionError)
    assert "error:" not in result.stderr


def test_the_real_group_is_a_sluice_group():
    from streams.cli import main

    assert isinstance(main, SluiceGroup)


# -- describing failures without values ----------------------------------------------------
def test_value_free_keeps_the_class_and_drops_the_message():
    from datetime import datetime

    try:
        datetime.fromisoformat("maria@example.com")
    except ValueError as exc:
        assert "maria" in str(exc)  # what the library says
        assert value_free(exc) == "ValueError"


def test_value_free_keeps_what_is_known_to_be_value_free():
    import json

    try:
        b"maria \xff".decode("utf-8")
    except UnicodeDecodeError as exc:
        assert value_free(exc) == "UnicodeDecodeError at byte 6: invalid start byte"
    try:
        json.loads('{"a": "maria \\q"}')
    except json.JSONDecodeError as exc:
        assert value_free(exc) == "JSONDecodeError: Invalid \\escape (line 1, column 14)"


def test_value_free_traceback_says_where_not_what():
    try:
        raise KeyError("maria@example.com")
    except KeyError as exc:
        text = value_free_traceback(exc)
    assert "test_errors.py" in text and text.endswith("KeyError")
    assert "maria@example.com" not in text.replace('raise KeyError("maria@example.com")', "")
