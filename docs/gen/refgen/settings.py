"""Settings → rows: every environment variable of a pydantic settings class.

Sluice's shared settings (``streams.settings.Settings``) read ``SLUICE_*`` with
``__`` between a section and its field; each processor's own settings class
names its prefix in ``model_config["env_prefix"]`` (``SLUICE_GUARD__``).
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from refgen.markdown import DASH, code, escape, one_line, table


@dataclass(frozen=True)
class SettingRow:
    """One environment variable."""

    env: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Section:
    """The rows of one settings class (or one nested section of ``Settings``)."""

    title: str
    source: str  # dotted path of the class
    doc: str
    rows: list[SettingRow]
    notes: tuple[str, ...] = ()


def env_prefix(model: type[BaseModel]) -> str:
    """The environment prefix a settings class reads (empty for a plain model)."""
    return str(model.model_config.get("env_prefix", "") or "")


def type_name(annotation: Any) -> str:
    """A short, readable name of a field's type: ``int``, ``Path | None``, ``"a" | "b"``."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is not None:
        inner = ", ".join(type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(annotation, type):
        return "secret" if issubclass(annotation, SecretStr) else annotation.__name__
    return str(annotation).replace("typing.", "")


def default_text(field: FieldInfo, root: Path | None = None) -> str:
    """The default of a field as text; paths under ``root`` are shown relative to it."""
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "computed"
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return DASH
    if isinstance(value, Path) and root is not None and value.is_absolute():
        try:
            relative = value.relative_to(root)
            return "<repo>" if relative == Path() else f"<repo>/{relative}"
        except ValueError:
            return str(value)
    if isinstance(value, BaseModel):
        return "section"
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if value != "" else '""'


def _nested(field: FieldInfo) -> type[BaseModel] | None:
    """The model class of a nested section, or None for a plain value."""
    annotation = field.annotation
    if not isinstance(annotation, type) or issubclass(annotation, BaseSettings):
        return None
    return annotation if issubclass(annotation, BaseModel) else None


def setting_rows(model: type[BaseModel], prefix: str, root: Path | None = None) -> list[SettingRow]:
    """One row per scalar field of ``model``, nested sections left out (see ``sections``)."""
    rows = []
    for name, field in model.model_fields.items():
        if _nested(field) is not None:
            continue
        rows.append(
            SettingRow(
                env=f"{prefix}{name.upper()}",
                type=type_name(field.annotation),
                default=default_text(field, root),
                description=one_line(field.description or ""),
            )
        )
    return rows


def _doc(cls: type) -> str:
    return one_line(inspect.getdoc(cls) or "")


def _source(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def validator_notes(model: type[BaseModel]) -> tuple[str, ...]:
    """The docstrings of a model's model validators: defaults they compute, rules they add."""
    decorators = model.__pydantic_decorators__.model_validators.values()
    return tuple(one_line(inspect.getdoc(d.func) or "") for d in decorators if d.func.__doc__)


def sections(model: type[BaseSettings], root: Path | None = None) -> list[Section]:
    """The sections of a settings class: its own fields, then each nested section's."""
    prefix = env_prefix(model)
    delimiter = str(model.model_config.get("env_nested_delimiter") or "__")
    found = [
        Section(
            title=f"{prefix}*",
            source=_source(model),
            doc=_doc(model),
            rows=setting_rows(model, prefix, root),
            notes=validator_notes(model),
        )
    ]
    for name, field in model.model_fields.items():
        nested = _nested(field)
        if nested is not None:
            sub_prefix = f"{prefix}{name.upper()}{delimiter}"
            found.append(
                Section(
                    title=f"{sub_prefix}*",
                    source=_source(nested),
                    doc=_doc(nested),
                    rows=setting_rows(nested, sub_prefix, root),
                    notes=validator_notes(nested),
                )
            )
    return [section for section in found if section.rows]


def render_section(section: Section, heading: str = "###") -> str:
    """A section as a heading, its class's docstring and a table of its variables."""
    rows = [
        (code(row.env), code(row.type), code(row.default), escape(row.description))
        for row in section.rows
    ]
    text = f"{heading} `{section.title}`\n\n"
    text += (
        f"{escape(section.doc)} (`{section.source}`)\n\n"
        if section.doc
        else f"`{section.source}`\n\n"
    )
    text += "".join(f"Note: {escape(note)}\n\n" for note in section.notes)
    return text + table(("variable", "type", "default", "description"), rows)
