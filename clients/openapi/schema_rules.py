"""buf.validate field rules as JSON Schema (2020-12, as OpenAPI 3.1 uses it).

The OpenAPI document must state exactly what the server accepts, and the server's input rules
are the protos' `buf.validate` options (checked by protovalidate in the interceptor chain). So
each rule becomes its JSON Schema keyword here, read from the same descriptor:

- string min_len / max_len / len, pattern, email, in / not_in, const: minLength / maxLength,
  pattern, format email, enum / not, const;
- string min_bytes / max_bytes: minLength / maxLength with `x-minBytes` / `x-maxBytes` (below);
- numbers' gte / gt / lte / lt / const / in: minimum / exclusiveMinimum / maximum /
  exclusiveMaximum / const / enum;
- repeated min_items / max_items / unique, items: minItems / maxItems / uniqueItems, the items;
- enum defined_only / in / not_in / const: the value names less those refused (no
  `*_UNSPECIFIED` where it is rejected);
- field_mask in: a pattern, a comma list of the allowed paths as listed (`*` alone);
- required, CEL `has(this.f)`, CEL `this.f.matches('re')`: required, required `f`, a pattern on `f`.

Byte lengths: JSON Schema counts characters, and no keyword counts UTF-8 bytes. An ASCII
string (what a password usually is) has as many bytes as characters, so the character bounds
are the byte bounds there; `x-minBytes`/`x-maxBytes` and the description say the real unit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

Dynamic = Any  # buf.validate.FieldRules, built at run time from the descriptor (see generate.py)
_NUMBER_KINDS = ("int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "double", "float")
_BOUNDS = (("gte", "minimum"), ("gt", "exclusiveMinimum"), ("lte", "maximum"), ("lt", "exclusiveMaximum"))
_HAS = re.compile(r"^has\(this\.(\w+)\)$")
_MATCHES = re.compile(r"^this\.(\w+)\.matches\('((?:[^'\\]|\\.)*)'\)$")


def apply(schema: dict[str, Any], rules: Dynamic, *, repeated: bool) -> None:
    """Add to `schema` (of a field's value, or of the whole list if `repeated`) what `rules` says."""
    kind = rules.WhichOneof("type")
    if kind == "repeated" and repeated:
        r = rules.repeated
        _copy(r, schema, (("min_items", "minItems"), ("max_items", "maxItems")))
        if r.unique:
            schema["uniqueItems"] = True
        if r.HasField("items") and "$ref" not in schema["items"]:
            apply(schema["items"], r.items, repeated=False)
    elif kind == "string":
        _string(schema, rules.string)
    elif kind in _NUMBER_KINDS:
        n = getattr(rules, kind)
        _copy(n, schema, _BOUNDS)
        if n.HasField("const"):
            schema["const"] = n.const
        if len(getattr(n, "in")):
            schema["enum"] = list(getattr(n, "in"))
    elif kind == "field_mask":
        allowed = list(getattr(rules.field_mask, "in"))
        if allowed:
            schema["pattern"] = mask_pattern(allowed)
            schema["example"] = ",".join([path for path in allowed if path != "*"][:2])
            schema["description"] = (
                f"{schema.get('description', '')} Allowed paths: "
                + ", ".join(f"`{p}`" for p in allowed if p != "*")
                + ("; or `*` alone, every one of them." if "*" in allowed else ".")
            ).strip()


def _string(schema: dict[str, Any], s: Dynamic) -> None:
    _copy(s, schema, (("min_len", "minLength"), ("max_len", "maxLength"), ("pattern", "pattern")))
    if s.HasField("len"):
        schema["minLength"] = schema["maxLength"] = s.len
    for rule, keyword, extension in (
        ("min_bytes", "minLength", "x-minBytes"),
        ("max_bytes", "maxLength", "x-maxBytes"),
    ):
        if s.HasField(rule):
            schema[keyword] = schema[extension] = getattr(s, rule)
    if s.HasField("email") and s.email:
        schema["format"] = "email"
    if s.HasField("const"):
        schema["const"] = s.const
    if len(getattr(s, "in")):
        schema["enum"] = list(getattr(s, "in"))
    if len(s.not_in):
        schema["not"] = {"enum": list(s.not_in)}


def enum_values(names_by_number: dict[int, str], rules: Dynamic) -> list[str] | None:
    """The enum value names a field accepts, when its rules refuse some; None: all of them."""
    if rules.WhichOneof("type") != "enum":
        return None
    e = rules.enum
    allowed = list(names_by_number)
    if e.HasField("const"):
        allowed = [e.const]
    if len(getattr(e, "in")):
        allowed = [n for n in allowed if n in set(getattr(e, "in"))]
    refused = set(e.not_in)
    if not refused and len(allowed) == len(names_by_number):
        return None
    return [names_by_number[n] for n in allowed if n not in refused]


def cel_constraints(rules: Dynamic) -> tuple[list[str], dict[str, str]]:
    """What the simple CEL rules on a message field say about that message: the fields it must
    have (`has(this.f)`) and their patterns (`this.f.matches('re')`). Any other CEL expression
    is refused, so the document never silently omits a rule."""
    required: list[str] = []
    patterns: dict[str, str] = {}
    for rule in rules.cel:
        if match := _HAS.match(rule.expression):
            required.append(match.group(1))
        elif match := _MATCHES.match(rule.expression):
            patterns[match.group(1)] = match.group(2).replace("\\\\", "\\")
        else:
            raise ValueError(f"CEL rule {rule.id!r} has no JSON Schema form here: {rule.expression}")
    return required, patterns


def mask_pattern(paths: Sequence[str]) -> str:
    """A FieldMask in the query string as the server takes it: allowed paths, comma-separated
    (as the rule spells them, so a proto lists both names of a two-word field; repeats are
    harmless), `*` alone, or nothing (no mask)."""
    names = "|".join(re.escape(p) for p in paths if p != "*")
    star = "|\\*" if "*" in paths else ""
    return f"^(?:(?:{names})(?:,(?:{names}))*{star})?$"


def _copy(rules: Dynamic, schema: dict[str, Any], pairs: Sequence[tuple[str, str]]) -> None:
    for rule, keyword in pairs:
        if rules.HasField(rule):
            schema[keyword] = getattr(rules, rule)
