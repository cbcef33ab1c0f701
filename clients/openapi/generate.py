"""OpenAPI 3.1 of the REST surface, derived from the descriptor Envoy transcodes with.

    python clients/openapi/generate.py envoy/taskapi.binpb OUT.json

`scripts/protos.py generate` runs this; `check` fails when the committed document is
stale. Everything comes from the descriptor, the way Envoy's grpc_json_transcoder
reads it, so the document cannot drift from what the edge serves:

- paths and verbs from `google.api.http` (`body`, path templates); the response
  is the whole response message, which for single-resource RPCs is the resource
  itself (AIP style: Envoy 1.40's transcoder cannot apply `response_body`);
- parameters per the transcoder: path variables bind fields, the `body` field (or
  `*`) takes the JSON body, every other field is a query parameter (nested messages
  as `a.b`; well-known types such as Timestamp and FieldMask parse from a string);
- schemas in the proto3 JSON mapping: lowerCamelCase names, enums as names,
  int64 as strings, Timestamp as an RFC 3339 string, FieldMask as a comma list;
- `readOnly`/`required` from `google.api.field_behavior`, every `buf.validate` rule as JSON
  Schema (schema_rules.py: lengths, patterns, ranges, enums less refused values, CEL has/matches,
  field-mask paths);
- path variables with plain names, one per path (`{task.id}` and `{id}` after /tasks/ are both
  `{taskId}`), each with `x-proto-field` naming the field it binds;
- request bodies inline and closed (`additionalProperties: false`) with the proto field names as
  accepted aliases (one of the two names, never both), `null` allowed where a field is optional,
  because the edge refuses anything else (envoy/strict_json.lua); responses stay open;
- every status an RPC can answer: the common ones, its access level's, and its own
  (`taskapi.v1.errors`), with the error body and the rate-limit headers;
- the bearer scheme on every RPC whose `taskapi.v1.access` option is not PUBLIC;
- descriptions from the proto comments (the descriptor keeps source info).

Options are read through a descriptor pool built from the same file, so nothing
here depends on generated code (which may be regenerated in the same run).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import http_responses
import schema_rules
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

PACKAGE = "taskapi.v1"
FDP = descriptor_pb2.FieldDescriptorProto
# Error details the server attaches (API.md, "Errors"): documented as schemas.
ERROR_DETAILS = (
    "google.rpc.BadRequest",
    "google.rpc.ErrorInfo",
    "google.rpc.RetryInfo",
    "google.rpc.QuotaFailure",
)
# Well-known types have their own JSON form (proto3 JSON mapping).
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time", "example": "2030-01-31T12:00:00Z"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$", "example": "1.5s"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated lowerCamelCase field paths, e.g. `title,status`.",
        "example": "title,status",
    },
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string", "description": "The type URL of the embedded message."}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "minimum": 0},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
    "google.protobuf.FloatValue": {"type": "number", "format": "float"},
    "google.protobuf.DoubleValue": {"type": "number", "format": "double"},
}
SCALARS: dict[int, dict[str, Any]] = {
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_BYTES: {"type": "string", "format": "byte"},
    FDP.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FDP.TYPE_FLOAT: {"type": "number", "format": "float"},
    FDP.TYPE_INT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FDP.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FDP.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # 64-bit integers are JSON strings in the proto3 mapping (no precision loss in JS).
    FDP.TYPE_INT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SINT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FDP.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FDP.TYPE_FIXED64: {"type": "string", "format": "uint64"},
}
# Options re-read through our pool, and their extension values (google.api.HttpRule,
# buf.validate.FieldRules), are messages built at run time and read by field name: no static
# types exist for them, and types-protobuf cannot type an extension found by name.
Dynamic = Any
Comments = dict[tuple[int, ...], str]  # source location path -> comment


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Descriptor:
    """The descriptor set, indexed: messages, enums, comments and option readers."""

    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = list(fds.file)
        pool = descriptor_pool.DescriptorPool()
        for file in self.files:
            pool.Add(file)
        self._options = {
            kind: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"google.protobuf.{kind}"))
            for kind in ("MethodOptions", "FieldOptions")
        }
        self._ext = {
            name: pool.FindExtensionByName(name)
            for name in (
                "google.api.http",
                "google.api.field_behavior",
                "buf.validate.field",
                f"{PACKAGE}.access",
                f"{PACKAGE}.errors",
            )
        }
        self._code_names = {v.number: v.name for v in pool.FindEnumTypeByName("google.rpc.Code").values}
        self._access_names = {v.number: v.name for v in pool.FindEnumTypeByName(f"{PACKAGE}.AccessLevel").values}
        self._behavior_names = {v.number: v.name for v in pool.FindEnumTypeByName("google.api.FieldBehavior").values}
        self.messages: dict[str, tuple[descriptor_pb2.DescriptorProto, str]] = {}  # name -> (proto, comment)
        self.enums: dict[str, tuple[descriptor_pb2.EnumDescriptorProto, str, list[str]]] = {}
        self.field_comments: dict[tuple[str, int], str] = {}  # (message, field index) -> comment
        for file in self.files:
            comments = {
                tuple(loc.path): _clean(loc.leading_comments or loc.trailing_comments)
                for loc in file.source_code_info.location
            }
            for i, message in enumerate(file.message_type):
                self._index_message(message, f"{file.package}.{message.name}", (4, i), comments)
            for i, enum in enumerate(file.enum_type):
                self._index_enum(enum, f"{file.package}.{enum.name}", (5, i), comments)
        self.file_comments = {
            file.name: {tuple(loc.path): _clean(loc.leading_comments) for loc in file.source_code_info.location}
            for file in self.files
        }

    def _index_message(
        self, message: descriptor_pb2.DescriptorProto, name: str, path: tuple[int, ...], comments: Comments
    ) -> None:
        self.messages[name] = (message, comments.get(path, ""))
        for j in range(len(message.field)):
            self.field_comments[(name, j)] = comments.get((*path, 2, j), "")
        for j, nested in enumerate(message.nested_type):
            self._index_message(nested, f"{name}.{nested.name}", (*path, 3, j), comments)
        for j, enum in enumerate(message.enum_type):
            self._index_enum(enum, f"{name}.{enum.name}", (*path, 4, j), comments)

    def _index_enum(
        self, enum: descriptor_pb2.EnumDescriptorProto, name: str, path: tuple[int, ...], comments: Comments
    ) -> None:
        values = [comments.get((*path, 2, j), "") for j in range(len(enum.value))]
        self.enums[name] = (enum, comments.get(path, ""), values)

    def http_rule(self, method: descriptor_pb2.MethodDescriptorProto) -> Dynamic:
        return self._read("MethodOptions", method.options).Extensions[self._ext["google.api.http"]]

    def access(self, method: descriptor_pb2.MethodDescriptorProto) -> str:
        options = self._read("MethodOptions", method.options)
        return self._access_names[options.Extensions[self._ext[f"{PACKAGE}.access"]]]

    def errors(self, method: descriptor_pb2.MethodDescriptorProto) -> list[str]:
        """The gRPC codes of the RPC's own failures (the `taskapi.v1.errors` option)."""
        options = self._read("MethodOptions", method.options)
        return [self._code_names[c] for c in options.Extensions[self._ext[f"{PACKAGE}.errors"]]]

    def behaviors(self, field: descriptor_pb2.FieldDescriptorProto) -> set[str]:
        options = self._read("FieldOptions", field.options)
        return {self._behavior_names.get(b, str(b)) for b in options.Extensions[self._ext["google.api.field_behavior"]]}

    def rules(self, field: descriptor_pb2.FieldDescriptorProto) -> Dynamic:
        options = self._read("FieldOptions", field.options)
        return options.Extensions[self._ext["buf.validate.field"]]

    def _read(self, kind: str, options: Message) -> Dynamic:
        """Re-read options through our pool, where the extensions are known."""
        return self._options[kind].FromString(options.SerializeToString())


def _clean(comment: str) -> str:
    lines = [line.removeprefix(" ") for line in comment.strip("\n").split("\n")]
    return "\n".join(lines).strip()


def _summary(comment: str) -> str:
    first = comment.replace("\n", " ").split(". ")[0].rstrip(".")
    return first + "."


def _type_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    return field.type_name.lstrip(".")


class _Builder:
    def __init__(self, descriptor: _Descriptor) -> None:
        self.d = descriptor
        self.schemas: dict[str, Any] = {}
        self._pending: list[str] = []

    # --- schemas ---------------------------------------------------------------

    def type_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        """The schema of one value of the field (an array item if repeated)."""
        if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_GROUP):
            name = _type_name(field)
            if name in WELL_KNOWN:
                return dict(WELL_KNOWN[name])
            self.need(name)
            return _ref(name)
        if field.type == FDP.TYPE_ENUM:
            self.need(_type_name(field))
            return _ref(_type_name(field))
        return dict(SCALARS[field.type])

    def field_schema(self, message_name: str, index: int, *, input: bool = False) -> dict[str, Any]:
        """The schema of a field; `input`: as a request takes it (enum values the rules refuse,
        such as `*_UNSPECIFIED`, left out), else as responses carry it."""
        message, _ = self.d.messages[message_name]
        field = message.field[index]
        entry = self._map_entry(field)
        if entry is not None:
            schema: dict[str, Any] = {
                "type": "object",
                "additionalProperties": self.type_schema(entry.field[1]),
            }
        elif field.label == FDP.LABEL_REPEATED:
            schema = {"type": "array", "items": self.type_schema(field)}
        else:
            schema = self.type_schema(field)
        rules = self.d.rules(field)
        comment = self.d.field_comments.get((message_name, index), "")
        if comment:
            schema["description"] = comment
        if input and field.type == FDP.TYPE_ENUM and field.label != FDP.LABEL_REPEATED:
            enum, _, _ = self.d.enums[_type_name(field)]
            allowed = schema_rules.enum_values({v.number: v.name for v in enum.value}, rules)
            if allowed is not None:
                schema = {**self.enum_schema(_type_name(field)), "enum": allowed, **schema}
                schema.pop("$ref")
        schema_rules.apply(schema, rules, repeated=field.label == FDP.LABEL_REPEATED)
        if "OUTPUT_ONLY" in self.d.behaviors(field):
            schema["readOnly"] = True
        return schema

    def _map_entry(self, field: descriptor_pb2.FieldDescriptorProto) -> descriptor_pb2.DescriptorProto | None:
        if field.type != FDP.TYPE_MESSAGE or field.label != FDP.LABEL_REPEATED:
            return None
        entry = self.d.messages.get(_type_name(field))
        return entry[0] if entry and entry[0].options.map_entry else None

    def message_schema(
        self, name: str, *, without: tuple[str, ...] = (), input: bool = False, rules: Dynamic = None
    ) -> dict[str, Any]:
        """A message as an object; `input`: as a request body (see `field_schema`), with what the
        CEL `rules` of the field holding it say (required fields, patterns)."""
        message, comment = self.d.messages[name]
        cel_required, cel_patterns = schema_rules.cel_constraints(rules) if rules is not None else ([], {})
        properties, required = {}, []
        for index, field in enumerate(message.field):
            if field.name in without:
                continue
            properties[field.json_name] = self.field_schema(name, index, input=input)
            if field.name in cel_patterns:
                properties[field.json_name]["pattern"] = cel_patterns[field.name]
            if "REQUIRED" in self.d.behaviors(field) or self.d.rules(field).required or field.name in cel_required:
                required.append(field.json_name)
        schema: dict[str, Any] = {"type": "object"}
        if comment:
            schema["description"] = comment
        schema["properties"] = properties
        if required:
            schema["required"] = required
        return schema

    def strict_body(self, message_name: str, schema: dict[str, Any]) -> dict[str, Any]:
        """A request body as the edge enforces it (envoy/strict_json.lua): the message's fields,
        by JSON name or by proto name, and nothing else (`additionalProperties: false`; the schema
        is inline, so every tool sees it closed). Only request bodies say so: responses may gain
        fields."""
        message, _ = self.d.messages[message_name]
        aliases = {}
        for index, field in enumerate(message.field):
            if field.name != field.json_name and field.json_name in schema["properties"]:
                alias = self.field_schema(message_name, index, input=True)
                alias["description"] = f"The proto field name of `{field.json_name}`, accepted as well."
                aliases[field.name] = alias
        schema = {**schema, "properties": {**schema["properties"], **aliases}, "additionalProperties": False}
        required = set(schema.get("required", ()))
        # `null` is the same as leaving a field out, so an optional field may be null.
        schema["properties"] = {
            name: prop if name in required else _nullable(prop) for name, prop in schema["properties"].items()
        }
        # A required field may come by either name: one of the two must be there, and not null.
        either: list[dict[str, Any]] = [
            {"anyOf": [_present(field.json_name), _present(field.name)]}
            for field in message.field
            if field.name in aliases and field.json_name in required
        ]
        for field in message.field:
            if field.name in aliases and field.json_name in required:
                for name in (field.json_name, field.name):
                    schema["properties"][name] = _nullable(schema["properties"][name])
        # Never both names of one field (the edge refuses it: envoy/strict_json.lua).
        either += [
            {"not": {"allOf": [_present(field.json_name), _present(field.name)]}}
            for field in message.field
            if field.name in aliases
        ]
        if either:
            schema["required"] = [
                n
                for n in schema.get("required", [])
                if n not in {f.json_name for f in message.field if f.name in aliases}
            ]
            if not schema["required"]:
                del schema["required"]
            schema["allOf"] = either
        needed = bool(schema.get("required") or any("anyOf" in rule for rule in either))
        if not needed:  # no body, or a JSON null, is the empty object to the transcoder
            schema["type"] = ["object", "null"]
        return {
            "required": needed,
            "description": (
                "Strict: an unknown field, or a value of another JSON type than the field's, is a 400 "
                "naming the field. `null` is the same as leaving a field out."
            ),
            "content": {"application/json": {"schema": schema}},
        }

    def enum_schema(self, name: str) -> dict[str, Any]:
        enum, comment, value_comments = self.d.enums[name]
        lines = [comment] if comment else []
        lines += [f"- `{v.name}`: {c}" for v, c in zip(enum.value, value_comments, strict=False)]
        lines.append("Accepted case-insensitively on input, or as the value's number.")
        return {"type": "string", "enum": [v.name for v in enum.value], "description": "\n".join(lines)}

    def need(self, name: str) -> None:
        if name not in self.schemas and name not in self._pending:
            self._pending.append(name)

    def flush(self) -> None:
        while self._pending:
            name = self._pending.pop(0)
            self.schemas[name] = None  # reserve: recursion-safe
            self.schemas[name] = self.enum_schema(name) if name in self.d.enums else self.message_schema(name)

    # --- operations -------------------------------------------------------------

    def operation(
        self, service: str, method: descriptor_pb2.MethodDescriptorProto, comment: str, rule: Dynamic
    ) -> tuple[str, str, dict[str, Any]]:
        verb = rule.WhichOneof("pattern")
        if verb == "custom":
            verb, template = rule.custom.kind.lower(), rule.custom.path
        else:
            template = getattr(rule, verb)
        request = method.input_type.lstrip(".")
        response = method.output_type.lstrip(".")
        path_fields = re.findall(r"\{([^}=]+)(?:=[^}]*)?\}", template)
        names = {dotted: _parameter_name(template, dotted) for dotted in path_fields}
        path = re.sub(r"\{([^}=]+)(?:=[^}]*)?\}", lambda m: "{" + names[m.group(1)] + "}", template)
        access = self.d.access(method)
        op: dict[str, Any] = {
            "operationId": f"{service}_{method.name}",
            "tags": [service],
            "summary": _summary(comment) if comment else method.name,
            "description": comment,
            "x-grpc-method": f"/{PACKAGE}.{service}/{method.name}",
            "x-taskapi-access": access.removeprefix("ACCESS_LEVEL_"),
        }
        parameters = [self._path_parameter(request, p, names[p]) for p in path_fields]
        if rule.body != "*":
            parameters += self._query_parameters(request, "", set(path_fields), rule.body)
        if parameters:
            op["parameters"] = parameters
        if rule.body == "*":
            top_level = tuple(p for p in path_fields if "." not in p)
            op["requestBody"] = self.strict_body(request, self.message_schema(request, without=top_level, input=True))
        elif rule.body:
            field = self._field(request, rule.body)
            # Fields the path binds (task.id) are not the body's to set: an equal value passes,
            # another is a 400 (reject_binding_body_field_collisions), so the body leaves them out.
            bound = tuple(p.split(".", 1)[1] for p in path_fields if p.startswith(rule.body + "."))
            body = self.message_schema(_type_name(field), without=bound, input=True, rules=self.d.rules(field))
            op["requestBody"] = self.strict_body(_type_name(field), body)
        if rule.response_body:  # Envoy 1.40 cannot load it (envoyproxy/envoy#11136)
            raise ValueError(f"{service}.{method.name}: the edge cannot serve response_body")
        self.need(response)
        if access == "ACCESS_LEVEL_PUBLIC":
            op["security"] = []
        if access == "ACCESS_LEVEL_ADMIN":
            op["description"] += "\n\nRequires the ADMIN role."
        op["responses"] = http_responses.operation(response, access, self.d.errors(method), has_body=bool(rule.body))
        if method.server_streaming:  # Envoy's transcoder: Server-Sent Events, one message per event
            op.setdefault("parameters", []).append(
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "The `id` of the last event received (its `resumeToken`): the stream "
                    "continues after it. What a reconnecting SSE client sends.",
                    "schema": {"type": "string", "maxLength": 1024},
                }
            )
            op["responses"]["200"] = {
                "description": "A stream of Server-Sent Events, one `id: <resumeToken>` and one `data: <JSON>` "
                f"line per message (the `{response.rsplit('.', 1)[-1]}` schema); send the last `id` back as "
                "`Last-Event-ID` to resume.",
                "content": {
                    "text/event-stream": {
                        "schema": {  # one event (schemathesis checks each one against it)
                            "type": "object",
                            "required": ["data"],
                            "properties": {
                                "data": {
                                    "type": "string",
                                    "contentMediaType": "application/json",
                                    "contentSchema": _ref(response),
                                },
                                "event": {"type": "string"},
                                "id": {"type": "string"},
                            },
                        }
                    },
                },
            }
        return path, verb, op

    def _field(self, message_name: str, dotted: str) -> descriptor_pb2.FieldDescriptorProto:
        field = None
        for part in dotted.split("."):
            message, _ = self.d.messages[message_name]
            field = next(f for f in message.field if f.name == part)
            message_name = _type_name(field)
        assert field is not None
        return field

    def _index(self, message_name: str, name: str) -> int:
        message, _ = self.d.messages[message_name]
        return next(i for i, f in enumerate(message.field) if f.name == name)

    def _path_parameter(self, request: str, dotted: str, name: str) -> dict[str, Any]:
        *parents, leaf = dotted.split(".")
        owner = _type_name(self._field(request, ".".join(parents))) if parents else request
        schema = self.field_schema(owner, self._index(owner, leaf), input=True)
        if parents:  # the rules of the field holding the resource (CEL `this.id.matches(...)`)
            _, patterns = schema_rules.cel_constraints(self.d.rules(self._field(request, ".".join(parents))))
            if leaf in patterns:
                schema["pattern"] = patterns[leaf]
        description = schema.pop("description", "")
        schema.pop("readOnly", None)
        parameter = {"name": name, "in": "path", "required": True, "schema": schema, "x-proto-field": dotted}
        if description:
            parameter["description"] = description
        return parameter

    def _query_parameters(
        self, message_name: str, prefix: str, bound: set[str], body: str, json_prefix: str = ""
    ) -> list[dict[str, Any]]:
        """Every field not bound by the path or the body, per the transcoder's rules
        (it accepts the proto and the lowerCamelCase spelling; the latter is documented)."""
        message, _ = self.d.messages[message_name]
        parameters = []
        for index, field in enumerate(message.field):
            proto_path = prefix + field.name
            if proto_path in bound or proto_path == body or "OUTPUT_ONLY" in self.d.behaviors(field):
                continue
            is_message = field.type == FDP.TYPE_MESSAGE and _type_name(field) not in WELL_KNOWN
            if is_message:
                if field.label != FDP.LABEL_REPEATED:  # repeated messages cannot come from a query string
                    parameters += self._query_parameters(
                        _type_name(field), proto_path + ".", bound, body, json_prefix + field.json_name + "."
                    )
                continue
            schema = self.field_schema(message_name, index)
            description = schema.pop("description", "")
            parameter: dict[str, Any] = {
                "name": json_prefix + field.json_name,
                "in": "query",
                "schema": schema,
            }
            if field.label == FDP.LABEL_REPEATED:
                parameter.update(style="form", explode=True)
            if "REQUIRED" in self.d.behaviors(field):
                parameter["required"] = True
            if description:
                parameter["description"] = description
            parameters.append(parameter)
        return parameters


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or null (proto3 JSON: a null field is an absent one)."""
    kind = schema.get("type")
    if isinstance(kind, str) and "$ref" not in schema:
        out = {**schema, "type": [kind, "null"]}
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [schema, {"type": "null"}]}


def _present(name: str) -> dict[str, Any]:
    """An object that has `name`, not null (`required` alone holds for any non-object, `null` too)."""
    return {"type": "object", "required": [name], "properties": {name: {"not": {"type": "null"}}}}


def _parameter_name(template: str, dotted: str) -> str:
    """A path variable's plain name: `{task.id}` -> taskId, and `{id}` after `/tasks/` -> taskId
    as well, so one path has one name (OpenAPI holds `/tasks/{id}` and `/tasks/{task.id}` to be
    the same path, and many tools refuse dots in a name)."""
    parts = dotted.split(".")
    if len(parts) == 1:
        collection = re.search(r"/([A-Za-z]+)/\{" + re.escape(dotted) + r"[}=]", template)
        if collection and parts[0] == "id":
            parts = [collection.group(1).removesuffix("s"), "id"]
    head, *rest = "_".join(parts).split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def document(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    descriptor = _Descriptor(fds)
    builder = _Builder(descriptor)
    paths: dict[str, dict[str, Any]] = {}
    tags = []
    for file in descriptor.files:
        if file.package != PACKAGE:
            continue
        comments = descriptor.file_comments[file.name]
        for s, service in enumerate(file.service):
            tags.append({"name": service.name, "description": comments.get((6, s), "")})
            for m, method in enumerate(service.method):
                rule = descriptor.http_rule(method)
                for binding in [rule, *rule.additional_bindings]:
                    if binding.WhichOneof("pattern") is None:
                        continue
                    path, verb, op = builder.operation(service.name, method, comments.get((6, s, 2, m), ""), binding)
                    paths.setdefault(path, {})[verb] = op
    for name in ERROR_DETAILS:
        builder.need(name)
    builder.need("google.rpc.Status")
    builder.flush()
    status = builder.schemas["google.rpc.Status"]
    # Each detail is an Any (with its @type) holding one of the detail messages the server sends.
    details = status["properties"]["details"]
    details["items"] = {"allOf": [details["items"]], "anyOf": [_ref(name) for name in ERROR_DETAILS]}
    status["description"] = (
        "The error body of every failure: the gRPC status as JSON. `code` is the numeric gRPC code "
        "(3 INVALID_ARGUMENT, 5 NOT_FOUND, 16 UNAUTHENTICATED, ...); `details` carries "
        + ", ".join(f"`{n}`" for n in ERROR_DETAILS)
        + " messages, each tagged with its `@type` (`type.googleapis.com/<name>`)."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Task API",
            "version": "v1",
            "description": (
                "JSON over HTTP, transcoded by Envoy to the gRPC services of package `taskapi.v1`. "
                "Fields follow the proto3 JSON mapping: lowerCamelCase names, RFC 3339 timestamps, "
                "enum values as names, 64-bit integers as strings. Generated from the protos by "
                "`python scripts/protos.py generate`; do not edit."
            ),
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "local development (Envoy)"}],
        "security": [{"bearerAuth": []}],
        "tags": tags,
        "paths": {path: paths[path] for path in sorted(paths)},
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The `accessToken` of an AuthSession (Register, Login or Refresh).",
                }
            },
            **http_responses.components(),
            "schemas": {name: builder.schemas[name] for name in sorted(builder.schemas)},
        },
    }


def write(descriptor_path: Path, out_file: Path) -> None:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(Path(descriptor_path).read_bytes())
    text = json.dumps(document(fds), indent=2, ensure_ascii=False) + "\n"
    Path(out_file).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    write(Path(sys.argv[1]), Path(sys.argv[2]))
