"""Validate long lists of a lock or record quickly, with the JSON Schema still the only rule. No torch.

jsonschema spends ~85 us on each entry of a file list: a stranger's lock of
250,000 entries took 20 s to validate before anything else ran. Here each long
list's item schema is compiled into a plain predicate that accepts only what
the schema accepts (it knows a few keywords; anything else makes it decline),
the items it accepts leave the instance, and jsonschema validates the rest:
the first entry of every list, every entry the predicate declined, and the
whole remaining structure. An error's path is mapped back to the original
index, so the message is jsonschema's own, naming the same field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema

from repro.records import JsonValue

LONG = 32  # lists shorter than this go to jsonschema whole
Check = Callable[[Any], bool]
Schema = Mapping[str, JsonValue]  # a JSON Schema object (arbitrary JSON: every keyword is narrowed before use)
_KNOWN = frozenset({"type", "required", "properties", "additionalProperties", "items", "pattern", "minLength",
                    "not", "minimum", "maximum", "const", "enum", "$ref", "description", "title", "$comment"})
_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def first_error(instance: Any, schema: Schema) -> jsonschema.ValidationError | None:
    """jsonschema's first error (by path) for `instance`, long lists thinned first; None if valid."""
    index: dict[tuple[Any, ...], list[int]] = {}
    thin = _thinned(instance, schema, schema, (), index)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(thin), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    err = errors[0]
    path = list(_original(list(err.absolute_path), index))
    err.path.clear()
    err.path.extend(path)
    return err


def _original(path: list[Any], index: dict[tuple[Any, ...], list[int]]) -> Iterator[Any]:
    """A path in the thinned instance as the path in the original one."""
    prefix: tuple[Any, ...] = ()
    for part in path:
        kept = index.get(prefix)
        if kept is not None and isinstance(part, int):
            part = kept[part]
        prefix = (*prefix, part)
        yield part


def _thinned(value: Any, schema: Any, root: Schema, at: tuple[Any, ...],
             index: dict[tuple[Any, ...], list[int]]) -> Any:
    schema = _deref(schema, root)
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        return {k: _thinned(v, props[k], root, (*at, k), index) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        accept = _compile(schema["items"], root) if len(value) >= LONG else None
        keep = list(range(len(value))) if accept is None else \
            [i for i, item in enumerate(value) if i == 0 or not accept(item)]
        if accept is not None:
            index[at] = keep
        return [_thinned(value[i], schema["items"], root, (*at, j), index) for j, i in enumerate(keep)]
    return value


def _deref(schema: Any, root: Schema) -> Any:
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and len(schema) == 1:
        ref: str = schema["$ref"]
        if not ref.startswith("#/"):
            return None
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        schema = node
    return schema


def _compile(schema: Any, root: Schema) -> Check | None:
    """A predicate true only for values `schema` accepts; None where a keyword is not understood."""
    schema = _deref(schema, root)
    if schema is True:
        return lambda v: True
    if not isinstance(schema, dict) or not set(schema) <= _KNOWN or "$ref" in schema:
        return None
    checks: list[Check] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else kind
        if not all(k in _TYPES for k in kinds):
            return None
        tests = [_TYPES[k] for k in kinds]
        checks.append(lambda v: any(t(v) for t in tests))
    for made in (_strings(schema), _numbers(schema), _objects(schema, root), _arrays(schema, root)):
        if made is None:
            return None
        checks.extend(made)
    if "const" in schema:
        const = schema["const"]
        checks.append(lambda v: type(v) is type(const) and v == const)
    if "enum" in schema:
        options = [(type(o), o) for o in schema["enum"]]
        checks.append(lambda v: (type(v), v) in options)
    return lambda v: all(c(v) for c in checks)


def _strings(schema: Schema) -> list[Check] | None:
    out: list[Check] = []
    if "pattern" in schema:
        text = schema["pattern"]
        if not isinstance(text, str):
            return None
        pattern = re.compile(text)
        out.append(lambda v: not isinstance(v, str) or pattern.search(v) is not None)
    if "minLength" in schema:
        length = schema["minLength"]
        if not isinstance(length, (int, float, str)):
            return None
        least = int(length)
        out.append(lambda v: not isinstance(v, str) or len(v) >= least)
    if "not" in schema:
        inner = schema["not"]
        if not isinstance(inner, dict) or set(inner) != {"pattern"} or not isinstance(inner["pattern"], str):
            return None
        banned = re.compile(inner["pattern"])
        out.append(lambda v: isinstance(v, str) and banned.search(v) is None)  # non-strings: let jsonschema say
    return out


def _numbers(schema: Schema) -> list[Check] | None:
    out: list[Check] = []
    number = _TYPES["number"]
    low, high = schema.get("minimum"), schema.get("maximum")
    if "minimum" in schema:
        if not number(low):
            return None
        out.append(lambda v: not number(v) or v >= low)
    if "maximum" in schema:
        if not number(high):
            return None
        out.append(lambda v: not number(v) or v <= high)
    return out


def _objects(schema: Schema, root: Schema) -> list[Check] | None:
    declared = schema.get("properties", {})
    if not isinstance(declared, Mapping):
        return None
    props = {k: _compile(s, root) for k, s in declared.items()}
    extra = schema.get("additionalProperties", True)
    other = None if extra is False else _compile(extra, root)
    if any(c is None for c in props.values()) or (extra is not False and other is None):
        return None
    listed = schema.get("required", [])
    if not isinstance(listed, list):
        return None
    required = list(listed)

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        if any(k not in v for k in required):
            return False
        for key, item in v.items():
            test = props.get(key, other)
            if test is None or not test(item):
                return False
        return True

    return [check]


def _arrays(schema: Schema, root: Schema) -> list[Check] | None:
    if "items" not in schema:
        return []
    each = _compile(schema["items"], root)
    if each is None:
        return None
    return [lambda v: not isinstance(v, list) or all(each(x) for x in v)]
