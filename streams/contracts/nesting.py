"""How deeply a producer's JSON or Avro schema nests, measured without recursion.

Parsers and Avro decoders recurse once per level of nesting: a document a
hostile producer nests 100,000 levels deep makes Python raise RecursionError,
and makes fastavro's compiled reader overflow the C stack and take the whole
process down. These functions measure the nesting first, with an explicit
stack or a flat scan, so that nothing a producer sends can make them recurse,
and they stop as soon as the limit is passed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streams.errors import SchemaMismatch, SchemaTooComplex

# A JSON string (escapes included) or one bracket; brackets inside strings are skipped.
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPENING = frozenset(b"[{")

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})


def json_nests_deeper(data: bytes, limit: int) -> bool:
    """True when the arrays and objects of JSON text ``data`` nest more than ``limit`` deep.

    A flat scan of brackets outside strings: it never recurses and stops as soon as
    the depth passes ``limit``. It does not validate the JSON (a parser does that
    afterwards, once the depth is known to be safe); on text that is not JSON its
    answer only needs to be safe, not exact.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # cannot nest deeper than it has brackets: the usual record stops here
    depth = 0
    for match in _JSON_TOKENS.finditer(data):
        token = match.group()
        if len(token) != 1:
            continue  # a string
        if token[0] in _OPENING:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


@dataclass
class _Frame:
    """One schema node being walked: its children still to visit, and what it adds."""

    children: Iterator[Any]
    namespace: str
    level: int  # 1 for a nesting level (record, array, map, union), 0 otherwise
    names: tuple[str, ...] = ()  # the named type this node defines, if any
    height: int = field(default=0)


def avro_schema_depth(document: Any, limit: int) -> int:
    """How deeply the values of Avro schema ``document`` (parsed JSON) can nest.

    Counts nested record, array, map and union levels, following references to
    named types already defined (a reference nests as deep as its definition).
    Raises ``SchemaTooComplex`` when the depth passes ``limit`` or when a named type
    refers to itself, directly or through others: such a schema's values can nest
    without end, so no depth limit on the schema bounds the decoder. Raises
    ``SchemaMismatch`` for what is no Avro schema at all (an undefined type). Walks with an
    explicit stack and follows fastavro's name resolution, so a recursion that
    fastavro would accept is always found here.
    """
    heights: dict[str, int] = {}  # named types defined so far, by full name
    defining: set[str] = set()  # named types whose definition is being walked
    stack: list[_Frame] = []
    depth = 0  # the sum of ``level`` over the stack

    def too_deep() -> SchemaTooComplex:
        return SchemaTooComplex(f"nested deeper than {limit} levels")

    def push(frame: _Frame) -> None:
        nonlocal depth
        stack.append(frame)
        depth += frame.level
        if depth > limit:
            raise too_deep()

    def reference(name: str, namespace: str) -> int:
        if name in PRIMITIVES:
            return 0
        fullname = f"{namespace}.{name}" if "." not in name and namespace else name
        if fullname in defining:
            raise SchemaTooComplex(f"recursive: type {fullname} contains itself")
        if fullname not in heights:
            raise SchemaMismatch(f"refers to undefined type {fullname}")
        return heights[fullname]

    def visit(node: Any, namespace: str) -> int | None:
        """A leaf's height, or None after pushing a frame for the node's children."""
        if isinstance(node, str):
            return reference(node, namespace)
        if isinstance(node, list):
            push(_Frame(iter(node), namespace, 1))
            return None
        if not isinstance(node, dict):
            raise SchemaMismatch(f"a schema is a string, list or object, not {type(node).__name__}")
        kind = node.get("type")
        if kind in _NAMED:
            name = node.get("name")
            if not isinstance(name, str):
                raise SchemaMismatch(f"a {kind} without a name")
            space = node.get("namespace", namespace) or ""
            if not isinstance(space, str):
                raise SchemaMismatch(f"namespace of {name} is not a string")
            if "." in name:
                space, fullname = name.rsplit(".", 1)[0], name
            else:
                fullname = f"{space}.{name}" if space else name
            if kind in ("enum", "fixed"):
                heights[fullname] = 0
                return 0
            fields = node.get("fields")
            if not isinstance(fields, list):
                raise SchemaMismatch(f"record {fullname} has no list of fields")
            for item in fields:
                if not isinstance(item, dict) or "type" not in item:
                    raise SchemaMismatch(f"a field of record {fullname} has no type")
            defining.add(fullname)
            push(_Frame((item["type"] for item in fields), space, 1, (fullname,)))
            return None
        if kind == "array":
            push(_Frame(iter([node.get("items")]), namespace, 1))
            return None
        if kind == "map":
            push(_Frame(iter([node.get("values")]), namespace, 1))
            return None
        if isinstance(kind, str) and kind in PRIMITIVES:
            return 0  # a primitive with attributes (a logical type)
        raise SchemaMismatch("an object schema whose type is not an Avro type")

    deepest = visit(document, "") or 0
    while stack:
        frame = stack[-1]
        child = next(frame.children, _END)
        if child is _END:
            stack.pop()
            depth -= frame.level
            height = frame.height + frame.level
            for name in frame.names:
                defining.discard(name)
                heights[name] = height
            if stack:
                stack[-1].height = max(stack[-1].height, height)
            else:
                deepest = height
            continue
        leaf = visit(child, frame.namespace)
        if leaf is not None:
            if depth + leaf > limit:
                raise too_deep()
            frame.height = max(frame.height, leaf)
    return deepest


_END = object()
