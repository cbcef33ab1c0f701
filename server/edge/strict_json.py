"""Strict JSON request bodies at the edge: the Lua filter and its allow-list, from the descriptor.

Envoy 1.40's grpc_json_transcoder cannot refuse an unknown JSON field: the transcoding
library it uses (grpc-httpjson-transcoding, request_message_translator.cc) parses bodies
with `ignore_unknown_fields = true` hard-coded, and `request_validation_options` has only
`reject_unknown_method`, `reject_unknown_query_parameters` and
`reject_binding_body_field_collisions` (envoyproxy/envoy#46623; any other option name fails
`envoy --mode validate`). It also coerces some wrong JSON types (see envoy/strict_json.lua).

So the REST listener runs envoy/strict_json.lua just before the transcoder, with a table of
what each REST body may hold, derived here from the descriptor set the transcoder loads
(`google.api.http` rules, field JSON names and types) when the config is rendered. It
checks the top-level keys and the JSON kind of each value; `lua_source()` refuses a body
message with fields the top level cannot describe (a nested message other than a
well-known type with a JSON scalar form), so for these protos the check is the whole body.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

# Shipped in the distribution with the Envoy template (taskapi.envoy).
SCRIPT = Path(str(resources.files("taskapi.envoy").joinpath("strict_json.lua")))
PACKAGE = "taskapi.v1"
# The methods the filter runs for (envoy.yaml.j2 skips it for GET, HEAD, DELETE, OPTIONS).
BODY_METHODS = ("POST", "PUT", "PATCH")
FDP = descriptor_pb2.FieldDescriptorProto

# JSON kinds per the proto3 JSON mapping: s string, n number, b boolean, o object, a array.
_SCALAR_KINDS = {
    FDP.TYPE_STRING: "s",
    FDP.TYPE_BYTES: "s",
    FDP.TYPE_BOOL: "b",
    FDP.TYPE_ENUM: "sn",  # the value's name, or its number
    # Numbers may also be strings ("1", "NaN"); 64-bit integers usually are.
    **dict.fromkeys(
        (
            FDP.TYPE_INT32,
            FDP.TYPE_SINT32,
            FDP.TYPE_SFIXED32,
            FDP.TYPE_UINT32,
            FDP.TYPE_FIXED32,
            FDP.TYPE_INT64,
            FDP.TYPE_SINT64,
            FDP.TYPE_SFIXED64,
            FDP.TYPE_UINT64,
            FDP.TYPE_FIXED64,
            FDP.TYPE_FLOAT,
            FDP.TYPE_DOUBLE,
        ),
        "ns",
    ),
}
_WELL_KNOWN_KINDS = {
    "google.protobuf.Timestamp": "s",
    "google.protobuf.Duration": "s",
    "google.protobuf.FieldMask": "s",
    "google.protobuf.StringValue": "s",
    "google.protobuf.BytesValue": "s",
    "google.protobuf.BoolValue": "b",
    **dict.fromkeys(
        (
            "google.protobuf.Int32Value",
            "google.protobuf.UInt32Value",
            "google.protobuf.Int64Value",
            "google.protobuf.UInt64Value",
            "google.protobuf.FloatValue",
            "google.protobuf.DoubleValue",
        ),
        "ns",
    ),
}


@dataclass(frozen=True)
class FieldKinds:
    kinds: str  # the JSON kinds the value may have
    items: str | None = None  # for an array: its elements' kinds
    name: str = ""  # the field's JSON name: both spellings of one field share it (one may be given)


@dataclass(frozen=True)
class BodyRule:
    method: str  # HTTP method
    template: str  # the google.api.http path template
    path: str  # Lua pattern of the request path (without the query string)
    message: str  # the body's message type, for error messages
    prefix: str  # request field that takes the body, with a dot ("task."), or "" for body "*"
    fields: dict[str, FieldKinds]  # JSON key (JSON and proto spelling) -> what it may hold


def body_rules(descriptor_path: Path) -> list[BodyRule]:
    """One rule per REST route with a body, routes with fewer path variables first (the
    transcoder also prefers the more literal match; both User routes share one message)."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(Path(descriptor_path).read_bytes())
    messages = _messages(fds)
    rules = []
    for file in fds.file:
        if file.package != PACKAGE:
            continue
        for service in file.service:
            for method in service.method:
                http = method.options.Extensions[annotations_pb2.http]
                for binding in (http, *http.additional_bindings):
                    if not binding.body:
                        continue
                    rule = _rule(binding, method.input_type.lstrip("."), messages)
                    if rule.method not in BODY_METHODS:  # envoy.yaml.j2 skips the filter for others
                        raise ValueError(f"{method.name}: a body on {rule.method} is not checked")
                    rules.append(rule)
    return sorted(rules, key=lambda rule: rule.path.count("[^/]"))


def lua_source(descriptor_path: Path) -> str:
    """The Lua filter's source: the rules as a Lua table, then envoy/strict_json.lua."""
    lines = ["local RULES = {"]
    for rule in body_rules(descriptor_path):
        fields = ", ".join(
            f"[{_lua(key)}] = {{ kinds = {_lua(kinds.kinds)}"
            + (f", items = {_lua(kinds.items)}" if kinds.items else "")
            + f", name = {_lua(kinds.name)}"
            + " }"
            for key, kinds in sorted(rule.fields.items())
        )
        lines.append(
            f"  {{ method = {_lua(rule.method)}, path = {_lua(rule.path)}, message = {_lua(rule.message)},"
            f" prefix = {_lua(rule.prefix)}, fields = {{ {fields} }} }},"
        )
    lines.append("}")
    return "\n".join(lines) + "\n\n" + SCRIPT.read_text(encoding="utf-8")


def _messages(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def index(message: descriptor_pb2.DescriptorProto, name: str) -> None:
        found[name] = message
        for nested in message.nested_type:
            index(nested, f"{name}.{nested.name}")

    for file in fds.file:
        for message in file.message_type:
            index(message, f"{file.package}.{message.name}")
    return found


def _rule(binding: Any, request: str, messages: dict[str, descriptor_pb2.DescriptorProto]) -> BodyRule:
    verb = binding.WhichOneof("pattern")
    method, template = (
        (binding.custom.kind, binding.custom.path) if verb == "custom" else (verb.upper(), getattr(binding, verb))
    )
    message, prefix = request, ""
    if binding.body != "*":
        field = next(f for f in messages[request].field if f.name == binding.body)
        message, prefix = field.type_name.lstrip("."), binding.body + "."
    fields: dict[str, FieldKinds] = {}
    for field in messages[message].field:
        kinds = dataclasses.replace(_field_kinds(field, message), name=field.json_name)
        fields[field.json_name] = fields[field.name] = kinds  # the transcoder accepts both spellings
    return BodyRule(method, template, _path_pattern(template), message, prefix, fields)


def _field_kinds(field: descriptor_pb2.FieldDescriptorProto, owner: str) -> FieldKinds:
    type_name = field.type_name.lstrip(".")
    if field.type == FDP.TYPE_MESSAGE and type_name not in _WELL_KNOWN_KINDS:
        # A nested message (or a map) would need its own keys checked: extend strict_json.lua first.
        raise ValueError(f"{owner}.{field.name}: a body field of message type {type_name} is not checked")
    value = _WELL_KNOWN_KINDS[type_name] if field.type == FDP.TYPE_MESSAGE else _SCALAR_KINDS[field.type]
    if field.label == FDP.LABEL_REPEATED:
        return FieldKinds("a", value)
    return FieldKinds(value)


def _path_pattern(template: str) -> str:
    """`/api/v1/tasks/{task.id}` -> `^/api/v1/tasks/[^/]*/?$`: a variable is one segment (or
    any rest with `**`); a trailing slash is accepted, as the transcoder accepts it."""
    parts = re.split(r"(\{[^}]*\}|\*\*|\*)", template)
    pattern = ""
    for part in parts:
        if part.startswith("{"):
            pattern += ".*" if part.endswith("**}") else "[^/]*"
        elif part == "**":
            pattern += ".*"
        elif part == "*":
            pattern += "[^/]*"
        else:
            pattern += re.sub(r"([\^$()%.\[\]*+\-?])", r"%\1", part)
    return f"^{pattern}/?$"


def _lua(text: str) -> str:
    """A Lua string literal (our names and patterns are ASCII)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
